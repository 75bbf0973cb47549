//! Rollouts as text: the list of `fledge get`, the detail of `fledge get ROLLOUT`, the
//! live view of `get --watch` and `apply --wait`, and the line an action prints.
//!
//! Everything shown comes from the API's own types: the stage's progress is the
//! server's `stageRemainingMs`, the decision is the server's history; nothing is
//! re-derived here.

use std::time::UNIX_EPOCH;

use fledge_api::rollout::{Event, Rollout};
use fledge_engine::{Evidence, Phase, ValueUnit};
use fledge_spec::Strategy;
use serde_json::Value;

use super::output::{self, Table};

/// A rollout as a command prints it: the API's view of it, what `-o json|yaml`
/// prints (its `Serialize`), and why it ended.
pub trait RolloutView: serde::Serialize {
    /// The API's view of the rollout.
    fn rollout(&self) -> &Rollout;
    /// Why it ended, in one sentence, when its history or status says.
    fn decision_message(&self) -> Option<String>;
}

impl RolloutView for Rollout {
    fn rollout(&self) -> &Rollout {
        self
    }

    fn decision_message(&self) -> Option<String> {
        decision_event(self)
            .map(|e| e.message.clone())
            .filter(|m| !m.is_empty())
    }
}

/// `2/3`: the current stage (1-based) of the number of stages.
pub fn stage_label(r: &Rollout) -> String {
    match r.stages.len() {
        0 => format!("{}", r.stage_index + 1),
        n => format!("{}/{}", (r.stage_index + 1).min(n), n),
    }
}

/// `10%`, or `0% +mirror 100%` while stable's requests are copied to the canary.
pub fn weight_label(r: &Rollout) -> String {
    match r.canary_mirror {
        0 => format!("{}%", r.canary_weight),
        m => format!("{}% +mirror {m}%", r.canary_weight),
    }
}

/// The table of `GET /rollouts`.
pub fn list(rollouts: &[Rollout]) -> String {
    if rollouts.is_empty() {
        return "no rollouts\n".to_string();
    }
    let mut t = Table::new([
        "ID", "APP", "VERSION", "PHASE", "STAGE", "WEIGHT", "UPDATED",
    ]);
    for r in rollouts {
        let mut row = summary_row(r);
        row.push(r.updated_at.clone());
        t.row(row);
    }
    t.render()
}

/// A rollout's id, app, version, phase, stage and weight, as table cells.
fn summary_row(r: &Rollout) -> Vec<String> {
    vec![
        r.id.clone(),
        r.app.clone(),
        r.version.clone(),
        r.phase.as_str().to_owned(),
        stage_label(r),
        weight_label(r),
    ]
}

/// The one-shot rendering of `fledge get ROLLOUT`.
pub fn detail(r: &Rollout) -> String {
    let mut out = String::new();
    let mut head = Table::new(["ID", "APP", "VERSION", "PHASE", "STAGE", "WEIGHT"]);
    head.row(summary_row(r));
    out.push_str(&head.render());
    out.push_str(&body(r));
    let events = r.events.as_deref().unwrap_or_default();
    if !events.is_empty() {
        out.push_str("\nHistory:\n");
        let mut t = Table::new(["TIME", "EVENT", "BY", "MESSAGE"]);
        for e in events {
            t.row([
                timestamp_ms(&e.at).map(clock).unwrap_or_default(),
                e.kind.clone(),
                e.actor.clone(),
                e.message.clone(),
            ]);
        }
        out.push_str(&indent(&t.render()));
    }
    out
}

/// The live view of `get --watch` and `apply --wait`.
pub fn live(r: &Rollout) -> String {
    let mut out = format!(
        "Rollout {}  {} → {}  {}\n",
        r.id,
        r.app,
        r.version,
        r.phase.as_str()
    );
    // A blue/green rollout's stages are its previews and its switch.
    let stage = match (r.strategy, r.stages.get(r.stage_index)) {
        (Strategy::BlueGreen, Some(s)) if s.traffic == 100 => "Switch",
        (Strategy::BlueGreen, _) => "Preview",
        (Strategy::Canary, _) => "Stage",
    };
    out.push_str(&format!(
        "{stage} {}  weight {}",
        stage_label(r),
        weight_label(r)
    ));
    let total = r
        .stages
        .get(r.stage_index)
        .and_then(|s| s.duration)
        .map(|d| d.as_secs_f64());
    match (total, r.stage_remaining_ms) {
        _ if r.is_terminal() => {}
        (Some(total), Some(remaining)) if total > 0.0 => {
            let elapsed = (total - remaining as f64 / 1000.0).clamp(0.0, total);
            out.push_str(&format!(
                "  {} {} / {}",
                output::progress_bar(elapsed / total, 24),
                output::short_duration(elapsed),
                output::short_duration(total)
            ));
        }
        (_, None) if matches!(r.phase, Phase::Progressing | Phase::Paused) => {
            out.push_str("  (waits for a manual promote)");
        }
        _ => {}
    }
    out.push('\n');
    out.push_str(&body(r));
    out
}

/// The line an operator action prints.
pub fn acted(r: &Rollout, past: &str) -> String {
    format!(
        "rollout {} {past}: {} stage {} weight {}",
        r.id,
        r.phase.as_str(),
        stage_label(r),
        weight_label(r)
    )
}

/// The event that ended the rollout: the latest one named after its phase
/// (`Failed`, `Aborted`, `Succeeded`), else the latest that says it decided.
pub fn decision_event(r: &Rollout) -> Option<&Event> {
    let events = r.events.as_deref()?;
    let phase = r.phase.as_str();
    events.iter().rev().find(|e| e.kind == phase).or_else(|| {
        events.iter().rev().find(|e| {
            let k = e.kind.to_ascii_lowercase();
            ["fail", "abort", "rollback", "rolledback", "succeed"]
                .iter()
                .any(|w| k.contains(w))
        })
    })
}

/// A decision's message with who took it, unless it already names them (as an
/// operator's does: "alice aborted the rollout …").
pub fn by_whom(message: &str, actor: &str) -> String {
    let named = message
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | '.'))
        .any(|word| word == actor);
    if named {
        message.to_owned()
    } else {
        format!("{message}  (by {actor})")
    }
}

/// Criteria and, on failure, the decision's evidence.
fn body(r: &Rollout) -> String {
    let mut out = String::new();
    let criteria = r.analysis.as_ref().map_or(&[][..], |a| &a.criteria[..]);
    if !criteria.is_empty() {
        out.push('\n');
        out.push_str(&indent(&criteria_table(criteria).render()));
    }
    if matches!(r.phase, Phase::Failed | Phase::Aborted)
        && let Some(event) = decision_event(r)
    {
        let what = if event.message.is_empty() {
            &event.kind
        } else {
            &event.message
        };
        out.push_str(&format!("\nDecision: {}\n", by_whom(what, &event.actor)));
        out.push_str(&render_evidence(&event.evidence, criteria.is_empty()));
    }
    out
}

/// The criteria table: each criterion's canary and stable values, threshold, status.
pub fn criteria_table(criteria: &[Evidence]) -> Table {
    let mut t = Table::new(["CRITERION", "CANARY", "STABLE", "THRESHOLD", "STATUS"]);
    for c in criteria {
        let arm = |a: &fledge_engine::ArmSample| {
            let value = a
                .value
                .map(|v| format_value(v, c.unit))
                .unwrap_or_else(|| "no data".into());
            format!("{value} (n={})", a.requests)
        };
        t.row([
            c.criterion.clone(),
            arm(&c.canary),
            c.stable.as_ref().map(arm).unwrap_or_else(|| "-".into()),
            c.threshold
                .map(|v| format_value(v, c.unit))
                .unwrap_or_else(|| "-".into()),
            match &c.sequential {
                Some(s) if s.e_threshold > 0.0 => {
                    format!("{} (E={:.3} / {:.0})", c.status, s.e_value, s.e_threshold)
                }
                _ => c.status.to_string(),
            },
        ]);
    }
    t
}

/// The evidence a decision event carries (`{"criteria": [...]}`): each criterion's
/// summary, and its table unless the view already shows the same criteria.
fn render_evidence(evidence: &Value, with_table: bool) -> String {
    let list: Vec<Evidence> = evidence
        .get("criteria")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    if list.is_empty() {
        return String::new();
    }
    let mut out = String::from("Evidence:\n");
    for e in &list {
        if !e.summary.is_empty() {
            out.push_str(&format!("  {}\n", e.summary));
        }
    }
    if with_table {
        out.push_str(&indent(&criteria_table(&list).render()));
    }
    out
}

/// A value in canonical units, formatted by unit: `4.8%`, `512ms`, `12.5 rps`.
pub fn format_value(v: f64, unit: ValueUnit) -> String {
    match unit {
        ValueUnit::Ratio => output::percent(v),
        ValueUnit::Seconds => output::latency(v),
        ValueUnit::PerSecond => format!("{} rps", trim_float(v)),
        ValueUnit::Plain => trim_float(v),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// At most three decimals, trailing zeros removed.
pub fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// An RFC 3339 timestamp of the API as milliseconds since the epoch.
pub fn timestamp_ms(text: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

/// `HH:MM:SS` (UTC) of a timestamp.
fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed_rollout() -> Rollout {
        serde_json::from_value(json!({
            "id": "r-1", "app": "checkout", "version": "v2", "phase": "Failed",
            "stageIndex": 0, "canaryWeight": 0, "canary": null,
            "stages": [
                {"traffic": 10, "duration": "10s", "successCriteria": ["error_rate < 1%"]},
                {"traffic": 100, "final": true, "promote": true}
            ],
            "createdAt": "2023-11-14T22:13:20Z", "updatedAt": "2023-11-14T22:13:24Z",
            "finishedAt": "2023-11-14T22:13:24Z", "revision": 4,
            "allowedActions": ["retry"], "stageStartedAt": null, "stageEndsAt": null,
            "stageRemainingMs": null,
            "analysis": {"at": 1_700_000_000_000i64, "stageIndex": 0, "criteria": [{
                "criterion": "error_rate < 1%", "metric": "error_rate", "method": "sequential",
                "status": "fail", "unit": "ratio",
                "canary": {"value": 0.048, "requests": 1204, "bad": 58},
                "stable": {"value": 0.001, "requests": 10400},
                "threshold": 0.01, "minRequests": 100,
                "sequential": {"eValue": 37.2, "eThreshold": 20.0, "alpha": 0.05},
                "summary": "error_rate 4.8% (n=1,204) ≥ 1%"
            }]},
            "events": [
                {"id": 1, "rolloutId": "r-1", "app": "checkout", "seq": 1,
                 "at": "2023-11-14T22:13:20Z", "kind": "StageStarted", "actor": "engine",
                 "message": "stage 1 at 10%", "evidence": null},
                {"id": 2, "rolloutId": "r-1", "app": "checkout", "seq": 2,
                 "at": "2023-11-14T22:13:24Z", "kind": "Failed", "actor": "engine",
                 "message": "error_rate 4.8% (n=1,204) ≥ 1%", "evidence": null}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn labels_the_stage_and_weight() {
        let r = failed_rollout();
        assert_eq!(stage_label(&r), "1/2");
        assert_eq!(weight_label(&r), "0%");
        assert_eq!(decision_event(&r).unwrap().kind, "Failed");
        let dark = Rollout {
            canary_mirror: 100,
            ..r
        };
        assert_eq!(weight_label(&dark), "0% +mirror 100%");
    }

    #[test]
    fn failed_view_shows_criteria_and_decision() {
        let text = live(&failed_rollout());
        assert!(text.contains("error_rate < 1%"), "{text}");
        assert!(text.contains("4.8% (n=1204)"), "{text}");
        assert!(text.contains("fail (E=37.200 / 20)"), "{text}");
        assert!(
            text.contains("Decision: error_rate 4.8% (n=1,204) ≥ 1%  (by engine)"),
            "{text}"
        );
    }

    #[test]
    fn an_operators_abort_names_them_once() {
        let mut r = failed_rollout();
        r.phase = Phase::Aborted;
        r.analysis = None;
        let events = r.events.as_mut().unwrap();
        events[1].kind = "Aborted".to_owned();
        events[1].actor = "alice".to_owned();
        events[1].message =
            "alice aborted the rollout at stage 1/2 (10%): no reason given".to_owned();
        let text = live(&r);
        assert!(
            text.contains(
                "Decision: alice aborted the rollout at stage 1/2 (10%): no reason given\n"
            ),
            "{text}"
        );
        assert!(!text.contains("(by alice)"), "{text}");
    }

    #[test]
    fn progress_bar_follows_the_servers_stage_clock() {
        let mut r = failed_rollout();
        r.phase = Phase::Progressing;
        r.stage_remaining_ms = Some(5_000);
        let text = live(&r);
        assert!(
            text.contains("[############............] 5s / 10s"),
            "{text}"
        );
        r.stages[0].duration = None;
        r.stage_remaining_ms = None;
        assert!(live(&r).contains("waits for a manual promote"));
    }

    #[test]
    fn lists_rollouts_as_a_table() {
        let mut second = failed_rollout();
        second.id = "r-2".into();
        second.phase = Phase::Pending;
        let text = list(&[failed_rollout(), second]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].starts_with("r-1") && lines[1].contains("Failed"),
            "{text}"
        );
        assert!(lines[2].starts_with("r-2"), "{text}");
        assert_eq!(list(&[]), "no rollouts\n");
    }

    #[test]
    fn history_times_read_as_clock_times() {
        assert_eq!(timestamp_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(clock(3_723_000), "01:02:03");
        assert!(detail(&failed_rollout()).contains("22:13:24  Failed"));
    }
}
