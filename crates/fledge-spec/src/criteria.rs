//! The success-criteria language: `<metric> <op> <value>`.
//!
//! ```text
//! criterion := metric op bound
//! metric    := error_rate | success_rate | latency_p50|p75|p90|p95|p99|p999
//!            | latency_mean | request_rate | <name defined under `metrics:`>
//! op        := < | <= | > | >= | == | !=
//! bound     := quantity                      absolute:  latency_p95 < 500ms
//!            | stable [* number]             relative:  latency_p95 < stable * 1.2
//!            | stable (+|-) quantity         relative:  error_rate <= stable + 0.1%
//! quantity  := [-]number[unit]               unit: % ms s us rps (no space before it)
//! ```
//!
//! Values are stored canonically: ratios as fractions (`0.5%` → 0.005), times in
//! seconds (`500ms` → 0.5), rates per second. Units are checked against the metric:
//!
//! | metric | accepted | bare number means |
//! |---|---|---|
//! | `error_rate`, `success_rate`, custom `kind: ratio` or `unit: ratio` | `%` or bare | a fraction from 0 to 1 (`0.005` = `0.5%`) |
//! | `latency_*`, custom `unit: seconds` | `ms`, `s`, `us` | refused: a latency needs a unit |
//! | `request_rate`, custom `unit: perSecond` | `rps` or bare | requests per second |
//! | custom `unit: none` (the default for gauges) | bare only | the metric's own value |
//!
//! A bare ratio is a fraction rather than a percentage so that `error_rate < 5` (which
//! most likely means 5%) is refused instead of read as 500%; a fraction above 1 is an
//! error that suggests the `%` form.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One parsed success criterion, with the text it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Criterion {
    /// What is measured.
    pub metric: Metric,
    /// How the canary's value is compared with the bound.
    pub op: CmpOp,
    /// The bound, absolute or relative to the stable version, in canonical units.
    pub bound: Bound,
    /// The unit the author wrote the value in (used to display it the same way).
    pub unit: Option<Unit>,
    /// The criterion as written in the spec.
    pub source: String,
}

/// A measured quantity a criterion can test.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// Share of canary requests that failed (5xx or upstream failure), as a fraction.
    ErrorRate,
    /// Share of canary requests that succeeded, as a fraction.
    SuccessRate,
    /// A latency quantile in seconds; `quantile` is in (0, 1), e.g. 0.95 for `latency_p95`.
    Latency {
        /// The quantile, e.g. 0.95.
        quantile: f64,
    },
    /// Mean latency in seconds.
    LatencyMean,
    /// Requests per second served by the version.
    RequestRate,
    /// A metric defined under the spec's `metrics:` map.
    Custom(String),
}

/// Comparison operator: the criterion holds when `canary <op> bound`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// The right-hand side of a criterion, in the metric's canonical unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// A fixed value: `error_rate < 0.5%` is `Absolute(0.005)`.
    Absolute(f64),
    /// The stable version's value in the same window times a factor:
    /// `latency_p95 < stable * 1.2` is `StableTimes(1.2)`; plain `stable` is `StableTimes(1.0)`.
    StableTimes(f64),
    /// The stable version's value plus an offset (negative for `stable - x`):
    /// `error_rate <= stable + 0.1%` is `StablePlus(0.001)`.
    StablePlus(f64),
}

/// A unit written after a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// `%`: hundredths.
    Percent,
    /// `ms`: milliseconds.
    Millis,
    /// `s`: seconds.
    Seconds,
    /// `us`: microseconds.
    Micros,
    /// `rps`: requests (or events) per second.
    PerSecond,
}

/// What kind of quantity a metric is, which decides the units it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Dimension {
    /// A fraction from 0 to 1, written with `%` or as a bare fraction.
    Ratio,
    /// A time in seconds, written with `ms`, `s` or `us`.
    Seconds,
    /// A rate per second, written with `rps` or bare.
    PerSecond,
    /// A plain number, written bare.
    None,
}

/// A criterion that could not be parsed or does not fit its metric.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CriterionError {
    /// Character offset (0-based) in the criterion text of the offending part.
    pub offset: usize,
    /// What was expected and what was found.
    pub message: String,
}

/// The metric names every spec may use, for error messages.
pub const BUILTIN_METRICS: &str = "error_rate, success_rate, latency_p50|p90|p95|p99|p999 \
(any latency_pNN: p75, p995, ...), latency_mean, request_rate";

/// The built-in names an unknown metric name is compared with to suggest a
/// correction: those [`BUILTIN_METRICS`] lists by name (any `latency_pNN` is valid,
/// so only the usual quantiles are offered).
pub(crate) const SUGGESTED_METRICS: [&str; 9] = [
    "error_rate",
    "success_rate",
    "latency_p50",
    "latency_p90",
    "latency_p95",
    "latency_p99",
    "latency_p999",
    "latency_mean",
    "request_rate",
];

// === impl Criterion ===

impl Criterion {
    /// Parses a criterion. Names that are not built in become [`Metric::Custom`] and take
    /// any unit; use [`Criterion::parse_with`] to check them against their definitions.
    pub fn parse(text: &str) -> Result<Self, CriterionError> {
        Self::parse_with(text, |_| Some(None))
    }

    /// Parses a criterion, resolving custom metric names with `custom`: `None` means the
    /// name is unknown, `Some(None)` known with any unit, `Some(Some(d))` known with
    /// dimension `d`.
    pub fn parse_with(
        text: &str,
        custom: impl Fn(&str) -> Option<Option<Dimension>>,
    ) -> Result<Self, CriterionError> {
        let raw = Lexer::new(text).criterion()?;
        let (metric, dimension) = match builtin_metric(raw.metric.text) {
            Some(m) => {
                let d = m.dimension();
                (m, Some(d))
            }
            None => match custom(raw.metric.text) {
                Some(d) => (Metric::Custom(raw.metric.text.to_owned()), d),
                None => {
                    return Err(CriterionError {
                        offset: raw.metric.offset,
                        message: format!(
                            "expected a metric ({BUILTIN_METRICS}, or a name defined under `metrics:`), found `{}`",
                            raw.metric.text
                        ),
                    });
                }
            },
        };
        let metric_name = raw.metric.text;
        let (bound, unit) = match raw.bound {
            RawBound::Absolute(q) => {
                let v = q.canonical(metric_name, dimension, false)?;
                (Bound::Absolute(v), q.unit)
            }
            RawBound::StableTimes(None) => (Bound::StableTimes(1.0), None),
            RawBound::StableTimes(Some(q)) => {
                if let Some(u) = q.unit {
                    return Err(CriterionError {
                        offset: q.unit_offset,
                        message: format!(
                            "expected a plain factor after `stable *` (e.g. stable * 1.2), found the unit `{}`",
                            u.symbol()
                        ),
                    });
                }
                if q.value <= 0.0 {
                    return Err(CriterionError {
                        offset: q.offset,
                        message: format!(
                            "expected a factor greater than 0 after `stable *`, found {}",
                            q.text
                        ),
                    });
                }
                (Bound::StableTimes(q.value), None)
            }
            RawBound::StablePlus(sign, q) => {
                let v = q.canonical(metric_name, dimension, true)?;
                (Bound::StablePlus(sign * v), q.unit)
            }
        };
        Ok(Criterion {
            metric,
            op: raw.op,
            bound,
            unit,
            source: text.to_owned(),
        })
    }

    /// Whether the criterion holds for a canary value, given the stable version's value
    /// (needed only for relative bounds; `None` there means no evidence, never a pass).
    pub fn holds(&self, canary: f64, stable: Option<f64>) -> Option<bool> {
        let bound = self.bound.threshold(stable)?;
        Some(self.op.compare(canary, bound))
    }
}

impl FromStr for Criterion {
    type Err = CriterionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Writes the criterion in a canonical form that parses back to the same metric, op
/// and bound: in the author's unit when that round-trips exactly, else in the
/// canonical unit (fraction, seconds, per second).
impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.metric, self.op)?;
        match self.bound {
            Bound::Absolute(v) => write_quantity(f, v, self.unit, &self.metric),
            Bound::StableTimes(k) => write!(f, "stable * {k}"),
            Bound::StablePlus(v) => {
                let sign = if v.is_sign_negative() { '-' } else { '+' };
                write!(f, "stable {sign} ")?;
                write_quantity(f, v.abs(), self.unit, &self.metric)
            }
        }
    }
}

fn write_quantity(
    f: &mut fmt::Formatter<'_>,
    v: f64,
    unit: Option<Unit>,
    metric: &Metric,
) -> fmt::Result {
    // In the author's unit when that is exact (it nearly always is: the scaling is
    // done on decimal text), else in the canonical unit.
    if let Some(u) = unit
        && let Some(shown) = scale(v, -u.exponent())
        && scale(shown, u.exponent()) == Some(v)
    {
        return write!(f, "{shown}{}", u.symbol());
    }
    let seconds = metric.dimension() == Dimension::Seconds
        || unit.is_some_and(|u| u.dimension() == Dimension::Seconds);
    if seconds {
        write!(f, "{v}s")
    } else {
        write!(f, "{v}")
    }
}

impl Serialize for Criterion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Criterion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(d)?;
        // While parse_spec collects every problem, validation reports this one.
        if crate::raw::lenient() {
            return Ok(Criterion::parse(&text).unwrap_or_else(|_| Criterion {
                metric: Metric::Custom(String::new()),
                op: CmpOp::Lt,
                bound: Bound::Absolute(f64::NAN),
                unit: None,
                source: text.into_owned(),
            }));
        }
        Criterion::parse(&text).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "{} (at character {} of `{}`)",
                e.message,
                e.offset + 1,
                text
            ))
        })
    }
}

impl JsonSchema for Criterion {
    fn schema_name() -> Cow<'static, str> {
        "Criterion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*(<=|>=|==|!=|<|>)\s*\S.*$",
            "description": "A success criterion `<metric> <op> <value>`: metrics error_rate, success_rate, latency_p50|p75|p90|p95|p99|p999, latency_mean, request_rate or a name under `metrics:`; ops < <= > >= == !=; units %, ms, s, us, rps; relative forms `latency_p95 < stable * 1.2`, `error_rate <= stable + 0.1%`. A bare number for a rate of errors or successes is a fraction from 0 to 1 (`0.005` = `0.5%`); latencies need a unit.",
            "examples": ["error_rate < 0.5%", "latency_p95 < 500ms", "latency_p99 < stable * 1.2"]
        })
    }
}

// === impl Metric ===

impl Metric {
    /// The kind of quantity, which decides accepted units. Custom metrics report
    /// [`Dimension::None`] here; their definition under `metrics:` decides.
    pub fn dimension(&self) -> Dimension {
        match self {
            Metric::ErrorRate | Metric::SuccessRate => Dimension::Ratio,
            Metric::Latency { .. } | Metric::LatencyMean => Dimension::Seconds,
            Metric::RequestRate => Dimension::PerSecond,
            Metric::Custom(_) => Dimension::None,
        }
    }

    /// Whether a bigger value is worse (errors, latency) rather than better.
    pub fn higher_is_worse(&self) -> Option<bool> {
        match self {
            Metric::ErrorRate | Metric::Latency { .. } | Metric::LatencyMean => Some(true),
            Metric::SuccessRate | Metric::RequestRate => Some(false),
            Metric::Custom(_) => None,
        }
    }
}

fn builtin_metric(name: &str) -> Option<Metric> {
    Some(match name {
        "error_rate" => Metric::ErrorRate,
        "success_rate" => Metric::SuccessRate,
        "latency_mean" => Metric::LatencyMean,
        "request_rate" => Metric::RequestRate,
        _ => Metric::Latency {
            quantile: quantile_of(name.strip_prefix("latency_p")?)?,
        },
    })
}

/// The quantile named by the digits after `latency_p`: they are the decimals of the
/// quantile, at least two of them (`50` → 0.5, `05` → 0.05, `999` → 0.999), with no
/// trailing zero past the second (`500` would be a second name for `50`).
fn quantile_of(digits: &str) -> Option<f64> {
    let ok = (2..=6).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 2 || !digits.ends_with('0'))
        && digits.bytes().any(|b| b != b'0');
    ok.then(|| format!("0.{digits}").parse().ok()).flatten()
}

/// The digits [`quantile_of`] reads back as `q`; quantiles that no name can express
/// exactly (outside (0, 1), or with more than six decimals) are rounded to six.
fn quantile_digits(q: f64) -> String {
    let mut digits = format!("{:.6}", q.clamp(0.000001, 0.999999));
    if let Some(exact) = format!("{q}").strip_prefix("0.")
        && exact.len() <= 6
    {
        digits = format!("0.{exact}");
    }
    let mut d = digits
        .trim_start_matches("0.")
        .trim_end_matches('0')
        .to_owned();
    while d.len() < 2 {
        d.push('0');
    }
    d
}

/// Whether `name` is a built-in metric (custom metrics may not reuse these names).
pub fn is_builtin_metric(name: &str) -> bool {
    builtin_metric(name).is_some()
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::ErrorRate => f.write_str("error_rate"),
            Metric::SuccessRate => f.write_str("success_rate"),
            Metric::LatencyMean => f.write_str("latency_mean"),
            Metric::RequestRate => f.write_str("request_rate"),
            Metric::Latency { quantile } => write!(f, "latency_p{}", quantile_digits(*quantile)),
            Metric::Custom(name) => f.write_str(name),
        }
    }
}

// === impl CmpOp ===

impl CmpOp {
    /// Applies the operator: `lhs <op> rhs`.
    pub fn compare(self, lhs: f64, rhs: f64) -> bool {
        match self {
            CmpOp::Lt => lhs < rhs,
            CmpOp::Le => lhs <= rhs,
            CmpOp::Gt => lhs > rhs,
            CmpOp::Ge => lhs >= rhs,
            CmpOp::Eq => lhs == rhs,
            CmpOp::Ne => lhs != rhs,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

// === impl Bound ===

impl Bound {
    /// The threshold in canonical units, given the stable version's value when the
    /// bound is relative. `None` when a relative bound has no stable value.
    pub fn threshold(self, stable: Option<f64>) -> Option<f64> {
        match self {
            Bound::Absolute(v) => Some(v),
            Bound::StableTimes(k) => stable.map(|s| s * k),
            Bound::StablePlus(d) => stable.map(|s| s + d),
        }
    }

    /// Whether the bound compares with the stable version.
    pub fn is_relative(self) -> bool {
        !matches!(self, Bound::Absolute(_))
    }
}

// === impl Unit ===

impl Unit {
    /// The power of ten from this unit to the canonical one (fraction, second, per
    /// second): `%` is -2, `ms` -3.
    pub fn exponent(self) -> i32 {
        match self {
            Unit::Percent => -2,
            Unit::Millis => -3,
            Unit::Seconds => 0,
            Unit::Micros => -6,
            Unit::PerSecond => 0,
        }
    }

    /// The unit as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::Micros => "us",
            Unit::PerSecond => "rps",
        }
    }

    fn dimension(self) -> Dimension {
        match self {
            Unit::Percent => Dimension::Ratio,
            Unit::Millis | Unit::Seconds | Unit::Micros => Dimension::Seconds,
            Unit::PerSecond => Dimension::PerSecond,
        }
    }
}

impl Dimension {
    fn describe(self) -> &'static str {
        match self {
            Dimension::Ratio => {
                "a ratio: expected a percentage like 0.5% or a fraction from 0 to 1"
            }
            Dimension::Seconds => "a time: expected a value in ms, s or us (e.g. 500ms)",
            Dimension::PerSecond => {
                "a rate: expected requests per second like 50rps or a bare number"
            }
            Dimension::None => "a plain number: expected a value without a unit",
        }
    }
}

// === parsing ===

struct Token<'a> {
    text: &'a str,
    /// Character offset in the criterion text.
    offset: usize,
}

struct Quantity<'a> {
    text: &'a str,
    value: f64,
    offset: usize,
    unit: Option<Unit>,
    unit_offset: usize,
}

enum RawBound<'a> {
    Absolute(Quantity<'a>),
    StableTimes(Option<Quantity<'a>>),
    StablePlus(f64, Quantity<'a>),
}

struct RawCriterion<'a> {
    metric: Token<'a>,
    op: CmpOp,
    bound: RawBound<'a>,
}

impl Quantity<'_> {
    /// Converts to canonical units after checking the unit and range against the metric.
    /// `offset_form` is true for the `stable ± x` offset, which may be of either sign.
    fn canonical(
        &self,
        metric: &str,
        dimension: Option<Dimension>,
        offset_form: bool,
    ) -> Result<f64, CriterionError> {
        let value = match self.unit {
            Some(u) => format!("{}e{}", self.text, u.exponent())
                .parse::<f64>()
                .unwrap_or(f64::NAN),
            None => self.value,
        };
        let Some(dim) = dimension else {
            return Ok(value);
        };
        let unit_ok = match (dim, self.unit) {
            (Dimension::Ratio, None | Some(Unit::Percent)) => true,
            (Dimension::PerSecond, None | Some(Unit::PerSecond)) => true,
            (Dimension::None, None) => true,
            (Dimension::Seconds, Some(u)) => u.dimension() == Dimension::Seconds,
            _ => false,
        };
        if !unit_ok {
            let found = match self.unit {
                Some(u) => format!("`{}{}` (a {})", self.text, u.symbol(), unit_kind(u)),
                None => format!("the bare number {}", self.text),
            };
            let offset = if self.unit.is_some() {
                self.unit_offset
            } else {
                self.offset
            };
            return Err(CriterionError {
                offset,
                message: format!("{metric} is {}, found {found}", dim.describe()),
            });
        }
        if !offset_form && value < 0.0 && dim != Dimension::None {
            return Err(CriterionError {
                offset: self.offset,
                message: format!(
                    "expected a value of at least 0 for {metric}, found {}",
                    self.text
                ),
            });
        }
        if dim == Dimension::Ratio && value.abs() > 1.0 {
            let hint = if self.unit.is_none() {
                format!(
                    " (a bare number is a fraction; write {}% for a percentage)",
                    self.text
                )
            } else {
                String::new()
            };
            return Err(CriterionError {
                offset: self.offset,
                message: format!(
                    "expected a ratio from 0 to 1 (0% to 100%) for {metric}, found {}{}{hint}",
                    self.text,
                    self.unit.map_or("", Unit::symbol)
                ),
            });
        }
        Ok(value)
    }
}

/// `v × 10^pow10`, computed on the decimal text so that `99.9%` is exactly the float
/// nearest 0.999 (multiplying by 0.01 is not).
fn scale(v: f64, pow10: i32) -> Option<f64> {
    let text = format!("{v:e}");
    let (mantissa, exp) = text.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    format!("{mantissa}e{}", exp + pow10)
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
}

fn unit_kind(u: Unit) -> &'static str {
    match u.dimension() {
        Dimension::Ratio => "percentage",
        Dimension::Seconds => "time",
        Dimension::PerSecond => "rate",
        Dimension::None => "number",
    }
}

/// A cursor over the criterion's characters; offsets are in characters so that the
/// file column of an error can be computed even after non-ASCII text.
struct Lexer<'a> {
    text: &'a str,
    /// Byte position.
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer { text, pos: 0 }
    }

    fn char_offset(&self, byte: usize) -> usize {
        self.text[..byte].chars().count()
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn error_here(&self, expected: &str) -> CriterionError {
        CriterionError {
            offset: self.char_offset(self.pos),
            message: format!("expected {expected}, found {}", self.found()),
        }
    }

    fn found(&self) -> String {
        let rest = self.rest();
        if rest.is_empty() {
            return "the end of the criterion".to_owned();
        }
        let word: String = rest
            .split_whitespace()
            .next()
            .unwrap_or("")
            .chars()
            .take(20)
            .collect();
        format!("`{word}`")
    }

    fn ident(&mut self) -> Option<Token<'a>> {
        let rest = self.rest();
        let mut chars = rest.char_indices();
        match chars.next() {
            Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
            _ => return None,
        }
        let end = chars
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map_or(rest.len(), |(i, _)| i);
        let token = Token {
            text: &rest[..end],
            offset: self.char_offset(self.pos),
        };
        self.pos += end;
        Some(token)
    }

    fn op(&mut self) -> Option<CmpOp> {
        let rest = self.rest();
        let (op, len) = if rest.starts_with("<=") {
            (CmpOp::Le, 2)
        } else if rest.starts_with(">=") {
            (CmpOp::Ge, 2)
        } else if rest.starts_with("==") {
            (CmpOp::Eq, 2)
        } else if rest.starts_with("!=") {
            (CmpOp::Ne, 2)
        } else if rest.starts_with('<') {
            (CmpOp::Lt, 1)
        } else if rest.starts_with('>') {
            (CmpOp::Gt, 1)
        } else {
            return None;
        };
        self.pos += len;
        Some(op)
    }

    /// `[-]digits[.digits]` or `[-].digits`, then an optional unit right after it.
    fn quantity(&mut self) -> Result<Quantity<'a>, CriterionError> {
        let start = self.pos;
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let mut i = 0;
        if bytes.first() == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let mut digits = i - int_start;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let frac_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            digits += i - frac_start;
        }
        if digits == 0 {
            return Err(self.error_here("a number (e.g. 0.5%, 500ms, 1.2)"));
        }
        let text = &rest[..i];
        let value: f64 = text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| self.error_here("a number of reasonable size"))?;
        self.pos += i;
        let unit_offset = self.char_offset(self.pos);
        let unit_rest = self.rest();
        let unit_len = unit_rest
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '%' || *c == 'µ'))
            .map_or(unit_rest.len(), |(i, _)| i);
        let unit_text = &unit_rest[..unit_len];
        if unit_text.is_empty() {
            let after_space = unit_rest.trim_start();
            let word = after_space
                .split(|c: char| c.is_whitespace())
                .next()
                .unwrap_or("");
            if after_space.len() < unit_rest.len()
                && matches!(word, "%" | "ms" | "s" | "us" | "µs" | "rps")
            {
                return Err(CriterionError {
                    offset: unit_offset,
                    message: format!(
                        "expected the unit right after the number ({text}{word}), found a space"
                    ),
                });
            }
        }
        let unit = match unit_text {
            "" => None,
            "%" => Some(Unit::Percent),
            "ms" => Some(Unit::Millis),
            "s" => Some(Unit::Seconds),
            "us" | "µs" => Some(Unit::Micros),
            "rps" => Some(Unit::PerSecond),
            other => {
                return Err(CriterionError {
                    offset: unit_offset,
                    message: format!("expected a unit (%, ms, s, us or rps), found `{other}`"),
                });
            }
        };
        self.pos += unit_len;
        Ok(Quantity {
            text,
            value,
            offset: self.char_offset(start),
            unit,
            unit_offset,
        })
    }

    fn criterion(mut self) -> Result<RawCriterion<'a>, CriterionError> {
        self.skip_ws();
        let metric = self
            .ident()
            .ok_or_else(|| self.error_here("a metric name such as error_rate or latency_p95"))?;
        self.skip_ws();
        let op = self
            .op()
            .ok_or_else(|| self.error_here("a comparison operator (<, <=, >, >=, ==, !=)"))?;
        self.skip_ws();
        let bound = if self.rest().starts_with("stable")
            && !self.rest()[6..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        {
            self.pos += 6;
            self.skip_ws();
            let rest = self.rest();
            if rest.is_empty() {
                RawBound::StableTimes(None)
            } else if let Some(sign) = match rest.as_bytes()[0] {
                b'+' => Some(1.0),
                b'-' => Some(-1.0),
                _ => None,
            } {
                self.pos += 1;
                self.skip_ws();
                let q = self.quantity()?;
                if q.value < 0.0 {
                    return Err(CriterionError {
                        offset: q.offset,
                        message: format!(
                            "expected a number without a sign after `stable {}`, found {}",
                            if sign > 0.0 { '+' } else { '-' },
                            q.text
                        ),
                    });
                }
                RawBound::StablePlus(sign, q)
            } else if rest.starts_with('*') {
                self.pos += 1;
                self.skip_ws();
                RawBound::StableTimes(Some(self.quantity()?))
            } else {
                return Err(self.error_here("`*`, `+`, `-` or the end after `stable`"));
            }
        } else {
            RawBound::Absolute(self.quantity()?)
        };
        self.skip_ws();
        if !self.rest().is_empty() {
            return Err(self.error_here("the end of the criterion"));
        }
        Ok(RawCriterion { metric, op, bound })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Criterion {
        Criterion::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> CriterionError {
        match Criterion::parse(text) {
            Ok(c) => panic!("{text} parsed as {c:?}"),
            Err(e) => e,
        }
    }

    /// Asserts that `text` is refused at character `offset` with a message that
    /// contains `says`.
    fn refused_at(text: &str, offset: usize, says: &str) {
        let e = err(text);
        assert_eq!(e.offset, offset, "{text}");
        assert!(e.message.contains(says), "{text}: {}", e.message);
    }

    #[test]
    fn seed_criteria() {
        let c = ok("error_rate < 0.5%");
        assert_eq!(c.metric, Metric::ErrorRate);
        assert_eq!(c.op, CmpOp::Lt);
        assert_eq!(c.bound, Bound::Absolute(0.005));
        assert_eq!(c.source, "error_rate < 0.5%");
        let c = ok("latency_p95 < 500ms");
        assert_eq!(c.metric, Metric::Latency { quantile: 0.95 });
        assert_eq!(c.bound, Bound::Absolute(0.5));
    }

    #[test]
    fn units_are_canonical() {
        assert_eq!(ok("latency_p99<2s").bound, Bound::Absolute(2.0));
        assert_eq!(ok("latency_p50 <= 750us").bound, Bound::Absolute(0.00075));
        assert_eq!(ok("latency_mean < 0.25s").bound, Bound::Absolute(0.25));
        assert_eq!(ok("request_rate >= 10rps").bound, Bound::Absolute(10.0));
        assert_eq!(ok("request_rate >= 10").bound, Bound::Absolute(10.0));
        assert_eq!(ok("success_rate >= 99.9%").bound, Bound::Absolute(0.999));
        assert_eq!(ok("error_rate < 0.005").bound, Bound::Absolute(0.005));
        assert_eq!(
            ok("latency_p75 < 1s").metric,
            Metric::Latency { quantile: 0.75 }
        );
        assert_eq!(
            ok("latency_p05 < 1s").metric,
            Metric::Latency { quantile: 0.05 }
        );
        assert_eq!(
            ok("latency_p9999 < 1s").metric,
            Metric::Latency { quantile: 0.9999 }
        );
        for bad in [
            "latency_p5",
            "latency_p500",
            "latency_p00",
            "latency_p",
            "latency_p1234567",
        ] {
            assert!(!is_builtin_metric(bad), "{bad}");
        }
        for q in [0.5, 0.05, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.123456] {
            let name = Metric::Latency { quantile: q }.to_string();
            assert_eq!(
                builtin_metric(&name),
                Some(Metric::Latency { quantile: q }),
                "{name}"
            );
        }
        assert_eq!(Metric::Latency { quantile: 0.5 }.to_string(), "latency_p50");
        assert_eq!(
            Metric::Latency { quantile: 0.999 }.to_string(),
            "latency_p999"
        );
        assert_eq!(
            ok("latency_p999 < 1s").metric,
            Metric::Latency { quantile: 0.999 }
        );
    }

    #[test]
    fn all_ops() {
        for (s, op) in [
            ("<", CmpOp::Lt),
            ("<=", CmpOp::Le),
            (">", CmpOp::Gt),
            (">=", CmpOp::Ge),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
        ] {
            assert_eq!(ok(&format!("error_rate {s} 1%")).op, op);
        }
    }

    #[test]
    fn relative_forms() {
        assert_eq!(
            ok("latency_p95 < stable * 1.2").bound,
            Bound::StableTimes(1.2)
        );
        assert_eq!(
            ok("error_rate <= stable + 0.1%").bound,
            Bound::StablePlus(0.001)
        );
        assert_eq!(
            ok("latency_p95 < stable - 5ms").bound,
            Bound::StablePlus(-0.005)
        );
        assert_eq!(ok("error_rate <= stable").bound, Bound::StableTimes(1.0));
        assert!(ok("error_rate <= stable").bound.is_relative());
    }

    #[test]
    fn custom_metric_names_parse_leniently() {
        let c = ok("checkout_success >= 98%");
        assert_eq!(c.metric, Metric::Custom("checkout_success".into()));
        assert_eq!(c.bound, Bound::Absolute(0.98));
    }

    #[test]
    fn unknown_metric_with_definitions() {
        let e = Criterion::parse_with("checkout_sucess > 1", |_| None).unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(
            e.message.contains("found `checkout_sucess`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unit_mismatches() {
        let e = err("error_rate < 500ms");
        assert_eq!(e.offset, 16);
        assert!(
            e.message.starts_with("error_rate is a ratio"),
            "{}",
            e.message
        );
        refused_at("latency_p95 < 5%", 15, "latency_p95 is a time");
        refused_at("latency_p95 < 500", 14, "the bare number 500");
        let e = err("error_rate < 5");
        assert!(
            e.message.contains("write 5% for a percentage"),
            "{}",
            e.message
        );
        let e = err("error_rate < 150%");
        assert!(e.message.contains("from 0 to 1"), "{}", e.message);
        let e = err("latency_p95 < stable * 2ms");
        assert_eq!(e.offset, 24);
        refused_at("latency_p95 < 500xs", 17, "found `xs`");
    }

    #[test]
    fn malformed_points_at_the_offending_character() {
        assert_eq!(err("error_rate 0.5%").offset, 11);
        assert_eq!(err("error_rate < ").offset, 13);
        assert_eq!(err("error_rate =< 1%").offset, 11);
        assert_eq!(err("error_rate < 1% please").offset, 16);
        refused_at("latency_p95 < 500 ms", 17, "(500ms), found a space");
        assert_eq!(err("< 1%").offset, 0);
        assert_eq!(err("").offset, 0);
        assert_eq!(err("error_rate < stable / 2").offset, 20);
        assert_eq!(err("error_rate < -1%").offset, 13);
        assert_eq!(err("latency_p95 < stable * 0").offset, 23);
        assert_eq!(err("latency_p95 < stable + -1ms").offset, 23);
        // Offsets count characters, not bytes.
        assert_eq!(err("é < 1").offset, 0);
        assert_eq!(err("error_rate < 1% é").offset, 16);
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "error_rate < 0.5%",
            "latency_p95 < 500ms",
            "latency_p95 < stable * 1.2",
            "error_rate <= stable + 0.1%",
            "latency_p99 < stable - 5ms",
            "success_rate >= 0.07%",
            "request_rate > 12.5rps",
            "error_rate != 0.3",
        ] {
            let c = ok(text);
            let shown = c.to_string();
            let back = ok(&shown);
            assert_eq!(
                (&back.metric, back.op, back.bound),
                (&c.metric, c.op, c.bound),
                "{text} -> {shown}"
            );
        }
        assert_eq!(ok("error_rate<0.5%").to_string(), "error_rate < 0.5%");
        assert_eq!(ok("latency_p95<500ms").to_string(), "latency_p95 < 500ms");
    }

    #[test]
    fn holds_compares_against_the_bound() {
        let c = ok("latency_p95 < stable * 1.5");
        assert_eq!(c.holds(0.2, Some(0.2)), Some(true));
        assert_eq!(c.holds(0.31, Some(0.2)), Some(false));
        assert_eq!(c.holds(0.2, None), None);
        assert_eq!(ok("error_rate < 1%").holds(0.02, None), Some(false));
    }
}
