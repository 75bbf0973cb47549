//! The text of a `/metrics` page, in the two formats scrapers read: OpenMetrics 1.0
//! and the Prometheus text format 0.0.4, chosen from the client's `Accept` header.
//!
//! The server, the built-in proxy and the Kubernetes operator all write their metric
//! families through [`Page`], so the rules of each format live in one place:
//!
//! - a counter family is named without `_total` (`fledge_proxy_requests`) and its
//!   samples with it (`fledge_proxy_requests_total`); the Prometheus format declares
//!   the `_total` name in `# TYPE`, as Prometheus expects;
//! - an info family (`fledge_build`) has one sample `fledge_build_info{…} 1`; the
//!   Prometheus format, which has no info type, declares it as a gauge of that name;
//! - a histogram is written as cumulative `_bucket{le}` samples ending in `+Inf`,
//!   then `_sum` and `_count`;
//! - a family whose name ends in a unit (`_seconds`, `_ratio`, `_bytes`) declares it
//!   with `# UNIT` in OpenMetrics;
//! - OpenMetrics ends with `# EOF`.

use std::fmt::Write as _;

/// The media type of an OpenMetrics page.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The media type of a Prometheus text format page.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Units a family name may end with; OpenMetrics declares them with `# UNIT`.
const UNITS: [&str; 3] = ["seconds", "ratio", "bytes"];

/// Suffixes the formats give sample names: a family name must not end with one.
const RESERVED_SUFFIXES: [&str; 6] = ["_total", "_info", "_created", "_bucket", "_count", "_sum"];

/// Which text format a page is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text`), the default.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain`).
    PrometheusText,
}

impl Format {
    /// The format to answer a request with `Accept: accept`: the Prometheus text
    /// format when the client prefers `text/plain` to OpenMetrics (asks for it with a
    /// higher quality, or does not name OpenMetrics at all), else OpenMetrics (also
    /// when there is no `Accept`, or only `*/*`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::OpenMetrics;
        };
        let mut openmetrics: Option<f32> = None;
        let mut text: Option<f32> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut openmetrics,
                "text/plain" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |best| best.max(q)));
        }
        match (text, openmetrics) {
            (Some(t), None) if t > 0.0 => Format::PrometheusText,
            (Some(t), Some(o)) if t > o => Format::PrometheusText,
            _ => Format::OpenMetrics,
        }
    }

    /// The `Content-Type` of a page in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::PrometheusText => PROMETHEUS_TEXT,
        }
    }
}

/// What a metric family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonically increasing count; samples are named `<family>_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets, sum and count of observations.
    Histogram,
    /// Labels describing something, value always 1; the sample is `<family>_info`.
    Info,
}

/// A number as a sample value: integers exactly, floats in the formats' spelling
/// (`+Inf`, `-Inf`, `NaN`).
pub trait SampleValue: Copy {
    /// Appends the value's text to `out`.
    fn write_to(self, out: &mut String);
}

impl SampleValue for u64 {
    fn write_to(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for i64 {
    fn write_to(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for f64 {
    fn write_to(self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// A `/metrics` page being written: families one after the other, each declared
/// once and followed by all of its samples.
#[derive(Debug)]
pub struct Page {
    format: Format,
    out: String,
}

impl Page {
    /// An empty page in `format`.
    pub fn new(format: Format) -> Page {
        Page {
            format,
            out: String::new(),
        }
    }

    /// The page's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Declares the family `name` (without `_total` or `_info`) and returns it to add
    /// its samples.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid metric name or ends in a suffix the formats give
    /// sample names (`_total`, `_info`, `_bucket`, …): names are constants of the
    /// code, so this is a bug to catch in its tests.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        assert!(valid_name(name), "invalid metric family name {name:?}");
        assert!(
            !RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s)),
            "metric family {name:?} ends in a suffix reserved for sample names"
        );
        let declared = match (self.format, kind) {
            (Format::PrometheusText, Kind::Counter) => format!("{name}_total"),
            (Format::PrometheusText, Kind::Info) => format!("{name}_info"),
            _ => name.to_owned(),
        };
        let type_name = match (self.format, kind) {
            (_, Kind::Counter) => "counter",
            (_, Kind::Gauge) | (Format::PrometheusText, Kind::Info) => "gauge",
            (_, Kind::Histogram) => "histogram",
            (Format::OpenMetrics, Kind::Info) => "info",
        };
        let out = &mut self.out;
        let _ = writeln!(out, "# HELP {declared} {}", escape_help(help, self.format));
        let _ = writeln!(out, "# TYPE {declared} {type_name}");
        if self.format == Format::OpenMetrics
            && kind != Kind::Info
            && let Some(unit) = UNITS.iter().find(|u| name.ends_with(&format!("_{u}")))
        {
            let _ = writeln!(out, "# UNIT {declared} {unit}");
        }
        Family {
            page: self,
            name: name.to_owned(),
            kind,
        }
    }

    /// The families written so far, without the end marker: to be added to a page
    /// of the same format elsewhere ([`push_families`](Self::push_families)).
    pub fn families(self) -> String {
        self.out
    }

    /// Adds families another page of the same format wrote ([`families`](Self::families)).
    /// Their names must not be declared on this page too.
    pub fn push_families(&mut self, families: &str) {
        self.out.push_str(families);
    }

    /// The finished page: with `# EOF` for OpenMetrics.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// One family of a [`Page`], taking its samples.
#[derive(Debug)]
pub struct Family<'a> {
    page: &'a mut Page,
    name: String,
    kind: Kind,
}

impl Family<'_> {
    /// Adds the sample of a counter, gauge or info family with these labels. An info
    /// sample's value is always 1, whatever `value` says.
    ///
    /// # Panics
    ///
    /// On a histogram family (use [`Family::histogram`]).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl SampleValue) -> &mut Self {
        let suffix = match self.kind {
            Kind::Counter => "_total",
            Kind::Gauge => "",
            Kind::Info => "_info",
            Kind::Histogram => panic!("{} is a histogram: use Family::histogram", self.name),
        };
        let out = &mut self.page.out;
        out.push_str(&self.name);
        out.push_str(suffix);
        write_labels(out, labels, None);
        out.push(' ');
        if self.kind == Kind::Info {
            out.push('1');
        } else {
            value.write_to(out);
        }
        out.push('\n');
        self
    }

    /// Adds one sample per `(value of label, sample value)` of `values`: a family with
    /// one label.
    pub fn labelled<K: AsRef<str>, V: SampleValue>(
        &mut self,
        label: &str,
        values: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        for (k, v) in values {
            self.sample(&[(label, k.as_ref())], v);
        }
        self
    }

    /// Adds the series of a histogram with these labels: `counts[i]` observations
    /// fell at or below `bounds[i]` and above the bound before it, and the last of
    /// `counts` (one more than `bounds`) above every bound; `sum` is their total.
    ///
    /// # Panics
    ///
    /// On a family that is not a histogram, or when `counts` is not one longer than
    /// `bounds`.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) -> &mut Self {
        assert_eq!(
            self.kind,
            Kind::Histogram,
            "{} is not a histogram",
            self.name
        );
        assert_eq!(
            counts.len(),
            bounds.len() + 1,
            "one count per bucket and +Inf"
        );
        let name = &self.name;
        let out = &mut self.page.out;
        let mut cumulative = 0u64;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| bound(*b));
            let _ = write!(out, "{name}_bucket");
            write_labels(out, labels, Some(&le));
            let _ = writeln!(out, " {cumulative}");
        }
        let _ = write!(out, "{name}_sum");
        write_labels(out, labels, None);
        out.push(' ');
        sum.write_to(out);
        let _ = write!(out, "\n{name}_count");
        write_labels(out, labels, None);
        let _ = writeln!(out, " {cumulative}");
        self
    }
}

/// A bucket bound as `le` spells it: rounded to the nanosecond (so a computed ladder
/// reads `0.00011`, not its float noise) and always with a decimal point (`1.0`), the
/// canonical form OpenMetrics asks for.
fn bound(b: f64) -> String {
    let rounded = (b * 1e9).round() / 1e9;
    let s = rounded.to_string();
    if s.contains('.') { s } else { format!("{s}.0") }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let pairs = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (i, (name, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// `# HELP` text: OpenMetrics escapes backslash, newline and double quote; the
/// Prometheus format only the first two.
fn escape_help(help: &str, format: Format) -> String {
    let mut out = String::with_capacity(help.len());
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(format: Format) -> String {
        let mut page = Page::new(format);
        page.family("app_requests", Kind::Counter, "Requests \"answered\".")
            .sample(&[("app", "sh\"op")], 3u64);
        page.family("app_build", Kind::Info, "The version.")
            .sample(&[("version", "1.2")], 1u64);
        page.family("app_weight_ratio", Kind::Gauge, "Canary share.")
            .sample(&[], 0.25);
        page.family("app_tick_seconds", Kind::Histogram, "Ticks.")
            .histogram(&[], &[0.00011, 1.0], &[1, 2, 3], 9.5);
        page.finish()
    }

    #[test]
    fn openmetrics_names_counters_without_total_and_ends_with_eof() {
        let text = page(Format::OpenMetrics);
        let expected = "\
# HELP app_requests Requests \\\"answered\\\".
# TYPE app_requests counter
app_requests_total{app=\"sh\\\"op\"} 3
# HELP app_build The version.
# TYPE app_build info
app_build_info{version=\"1.2\"} 1
# HELP app_weight_ratio Canary share.
# TYPE app_weight_ratio gauge
# UNIT app_weight_ratio ratio
app_weight_ratio 0.25
# HELP app_tick_seconds Ticks.
# TYPE app_tick_seconds histogram
# UNIT app_tick_seconds seconds
app_tick_seconds_bucket{le=\"0.00011\"} 1
app_tick_seconds_bucket{le=\"1.0\"} 3
app_tick_seconds_bucket{le=\"+Inf\"} 6
app_tick_seconds_sum 9.5
app_tick_seconds_count 6
# EOF
";
        assert_eq!(text, expected);
    }

    #[test]
    fn prometheus_text_declares_the_sample_names() {
        let text = page(Format::PrometheusText);
        assert!(text.contains("# HELP app_requests_total Requests \"answered\".\n"));
        assert!(text.contains("# TYPE app_requests_total counter\napp_requests_total{"));
        assert!(text.contains("# TYPE app_build_info gauge\napp_build_info{version=\"1.2\"} 1\n"));
        assert!(!text.contains("# UNIT"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn special_values_are_spelt_as_the_formats_want() {
        let mut page = Page::new(Format::OpenMetrics);
        page.family("x", Kind::Gauge, "x")
            .sample(&[("a", "1")], f64::INFINITY)
            .sample(&[("a", "2")], f64::NEG_INFINITY)
            .sample(&[("a", "3")], f64::NAN)
            .sample(&[("a", "4")], -3i64);
        let text = page.finish();
        for line in [
            "x{a=\"1\"} +Inf",
            "x{a=\"2\"} -Inf",
            "x{a=\"3\"} NaN",
            "x{a=\"4\"} -3",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    #[should_panic(expected = "reserved")]
    fn a_family_named_like_a_sample_is_a_bug() {
        Page::new(Format::OpenMetrics).family("requests_total", Kind::Counter, "x");
    }

    #[test]
    fn negotiation_prefers_openmetrics_unless_text_is_preferred() {
        use Format::*;
        let cases = [
            (None, OpenMetrics),
            (Some("*/*"), OpenMetrics),
            (Some("text/plain"), PrometheusText),
            (
                Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                PrometheusText,
            ),
            // What Prometheus 2.x sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0.2, text/plain"),
                PrometheusText,
            ),
            (
                Some("text/plain;q=0.5, application/openmetrics-text"),
                OpenMetrics,
            ),
            (Some("text/plain;q=0"), OpenMetrics),
            (Some("TEXT/PLAIN; charset=utf-8"), PrometheusText),
            (Some("application/json"), OpenMetrics),
        ];
        for (accept, expected) in cases {
            assert_eq!(Format::negotiate(accept), expected, "{accept:?}");
        }
    }
}
