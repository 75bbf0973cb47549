//! What a decision was based on: per-criterion evidence, in a shape both the threshold
//! and the sequential judge fill, and the human sentence that goes with it.
//!
//! Evidence is stored in the rollout's history and shown by the API, the CLI and the
//! web UI, so it must say everything an operator needs to agree (or disagree) with the
//! engine without reading code: the criterion as written, the measured values and
//! sample sizes of both arms, the threshold actually compared against, and for
//! sequential decisions the e-value and its threshold.
//!
//! Every number is in canonical units (ratios as fractions, times in seconds, rates
//! per second) and is finite: the rollout state is persisted as JSON, which has no
//! NaN or infinity.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The verdict on one criterion after the latest tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CriterionStatus {
    /// The criterion holds, with enough data to say so.
    Pass,
    /// The criterion is violated, with enough data (or evidence) to say so: the rollout
    /// fails at once.
    Fail,
    /// Too few requests (or no value at all) to judge: never a pass, never by itself a
    /// failure.
    NotEnoughData,
    /// Enough data, but no decision either way yet (a sequential test still gathering
    /// evidence). Blocks advancement like `NotEnoughData`.
    Undecided,
}

impl CriterionStatus {
    /// Whether this status lets a stage advance.
    pub fn is_pass(self) -> bool {
        self == CriterionStatus::Pass
    }
}

impl fmt::Display for CriterionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CriterionStatus::Pass => "pass",
            CriterionStatus::Fail => "fail",
            CriterionStatus::NotEnoughData => "not enough data",
            CriterionStatus::Undecided => "undecided",
        })
    }
}

/// How a criterion was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JudgeMethod {
    /// The measured value over the stage's window compared with a fixed or relative
    /// bound, once the window holds `minRequests` requests.
    Threshold,
    /// An anytime-valid sequential test (see `JUDGE.md`).
    Sequential,
}

/// The unit a criterion's values are expressed in, so they can be printed the way an
/// operator wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ValueUnit {
    /// A fraction in [0, 1], printed as a percentage.
    Ratio,
    /// A time in seconds, printed in ms below 10 s.
    Seconds,
    /// A rate in events per second, printed as `rps`.
    PerSecond,
    /// A plain number (custom metrics).
    Plain,
}

impl From<fledge_spec::Dimension> for ValueUnit {
    /// The unit values of a metric of this dimension are in.
    fn from(dimension: fledge_spec::Dimension) -> Self {
        match dimension {
            fledge_spec::Dimension::Ratio => ValueUnit::Ratio,
            fledge_spec::Dimension::Seconds => ValueUnit::Seconds,
            fledge_spec::Dimension::PerSecond => ValueUnit::PerSecond,
            fledge_spec::Dimension::None => ValueUnit::Plain,
        }
    }
}

impl ValueUnit {
    /// Formats `value` (canonical units) for people: `4.8%`, `512 ms`, `12.5 rps`.
    pub fn format(self, value: f64) -> String {
        match self {
            ValueUnit::Ratio => format!("{}%", trim_number(value * 100.0)),
            ValueUnit::Seconds if value.abs() < 10.0 => {
                format!("{} ms", trim_number(value * 1000.0))
            }
            ValueUnit::Seconds => format!("{} s", trim_number(value)),
            ValueUnit::PerSecond => format!("{} rps", trim_number(value)),
            ValueUnit::Plain => trim_number(value),
        }
    }
}

/// Three significant digits (at least one decimal below 10), trailing zeros removed:
/// `4.8`, `0.5`, `0.05`, `512`, `1204`.
fn trim_number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    let decimals = if a == 0.0 || a >= 100.0 {
        0
    } else {
        // Enough decimals for three significant digits.
        (2 - a.log10().floor() as i32).clamp(1, 9) as usize
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Formats a count with thousands separators: `1,204`.
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What was measured on one arm (canary or stable) over the judged window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArmSample {
    /// The metric's value in canonical units; `None` when there is no data at all.
    pub value: Option<f64>,
    /// Requests in the window (the sample size).
    pub requests: u64,
    /// "Bad" events in the window when the metric is a count of them (errors, or
    /// requests slower than the latency bound); `None` for values that are not counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad: Option<u64>,
}

/// The statistics of a sequential decision, filled by the sequential judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialEvidence {
    /// The abort e-value (evidence that the canary is worse), finite and ≥ 0.
    pub e_value: f64,
    /// The e-value that decides: `1 / alpha`.
    pub e_threshold: f64,
    /// The false-abort probability spent on this criterion.
    pub alpha: f64,
    /// The pass (non-inferiority) e-value, when that test runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_e_value: Option<f64>,
    /// The estimated canary/stable (or canary/bound) rate ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_estimate: Option<f64>,
    /// The tolerated ratio `R` of a comparative test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

/// The evidence on one criterion: what was compared, and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The criterion as the spec states it, e.g. `error_rate < 0.5%`.
    pub criterion: String,
    /// The metric's name, e.g. `error_rate`, `latency_p95` or a custom metric's name.
    pub metric: String,
    /// How it was judged.
    pub method: JudgeMethod,
    /// The verdict.
    pub status: CriterionStatus,
    /// The unit of `canary.value`, `stable.value` and `threshold`.
    pub unit: ValueUnit,
    /// The canary arm over the window.
    pub canary: ArmSample,
    /// The stable arm over the same window, when the criterion compares with it (or the
    /// judge looked at it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<ArmSample>,
    /// The bound the canary's value was compared with, after resolving a relative
    /// bound against stable; `None` when it could not be resolved (no stable data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The smallest sample (requests per arm) the judge needs before it decides.
    pub min_requests: u64,
    /// Present for sequential decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialEvidence>,
    /// One human sentence, e.g. `error_rate 4.8% (n=1,204) ≥ 0.5%`.
    pub summary: String,
}

/// The latest analysis of a rollout: every criterion of the current stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisReport {
    /// When the analysis ran (milliseconds since the Unix epoch).
    pub at: crate::Timestamp,
    /// The stage it belongs to (0-based).
    pub stage_index: usize,
    /// One entry per success criterion of that stage, in spec order.
    pub criteria: Vec<Evidence>,
}

impl AnalysisReport {
    /// Whether every criterion passes (true for a stage without criteria).
    pub fn all_pass(&self) -> bool {
        self.criteria.iter().all(|e| e.status.is_pass())
    }

    /// The first failing criterion, if any.
    pub fn first_failure(&self) -> Option<&Evidence> {
        self.criteria
            .iter()
            .find(|e| e.status == CriterionStatus::Fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_values_like_an_operator_writes_them() {
        assert_eq!(ValueUnit::Ratio.format(0.048), "4.8%");
        assert_eq!(ValueUnit::Ratio.format(0.005), "0.5%");
        assert_eq!(ValueUnit::Ratio.format(0.0005), "0.05%");
        assert_eq!(ValueUnit::Ratio.format(0.0), "0%");
        assert_eq!(ValueUnit::Ratio.format(1.0), "100%");
        assert_eq!(ValueUnit::Seconds.format(0.5), "500 ms");
        assert_eq!(ValueUnit::Seconds.format(0.0123), "12.3 ms");
        assert_eq!(ValueUnit::Seconds.format(12.5), "12.5 s");
        assert_eq!(ValueUnit::PerSecond.format(12.5), "12.5 rps");
        assert_eq!(ValueUnit::Plain.format(0.97), "0.97");
    }

    #[test]
    fn formats_counts_with_separators() {
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1204), "1,204");
        assert_eq!(format_count(1_000_000), "1,000,000");
    }
}
