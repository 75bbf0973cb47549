//! How the client commands print: aligned tables for people, JSON or YAML for scripts.
//!
//! Scripts get exactly what the server sent (re-serialised), so that `-o json` output
//! is stable across CLI versions; tables are a rendering and may change.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};

/// The output format chosen with `-o`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The server's JSON, pretty-printed.
    Json,
    /// The server's JSON as YAML.
    Yaml,
}

/// `-o/--output`, for every command that prints data.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Output format: tables or text for people, JSON or YAML for scripts.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub format: OutputFormat,
}

/// Renders `value` as JSON or YAML; `None` for the table format, which each command
/// renders itself.
pub fn render_machine<T: serde::Serialize>(
    format: OutputFormat,
    value: &T,
) -> anyhow::Result<Option<String>> {
    Ok(match format {
        OutputFormat::Table => None,
        OutputFormat::Json => Some(format!("{}\n", serde_json::to_string_pretty(value)?)),
        OutputFormat::Yaml => {
            let mut text = serde_saphyr::to_string(value)?;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            Some(text)
        }
    })
}

/// Prints `value` as `-o` asks (JSON or YAML), or the text `people` makes for the
/// table format; exit code 1, said on stderr, when it cannot be serialised.
pub fn print_or<T: serde::Serialize>(
    format: OutputFormat,
    value: &T,
    people: impl FnOnce() -> String,
) -> std::process::ExitCode {
    match render_machine(format, value) {
        Ok(text) => {
            print!("{}", text.unwrap_or_else(people));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot print the output as {format:?}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A table: a header row and data rows, printed with columns padded to the widest
/// cell (by character count, so `→` and `µ` line up).
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

// === impl Table ===

impl Table {
    /// A table with these column titles.
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends one row; missing cells print empty, extra cells are kept.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as text, one line per row, two spaces between columns, no trailing
    /// spaces.
    pub fn render(&self) -> String {
        let columns = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                let _ = write!(line, "{cell}");
                for _ in cell.chars().count()..*width {
                    line.push(' ');
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A text progress bar `[#####.....]` of `width` cells for a fraction in `[0, 1]`.
pub fn progress_bar(fraction: f64, width: usize) -> String {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = (fraction * width as f64).round() as usize;
    let mut bar = String::with_capacity(width + 2);
    bar.push('[');
    bar.extend(std::iter::repeat_n('#', filled));
    bar.extend(std::iter::repeat_n('.', width - filled));
    bar.push(']');
    bar
}

/// A ratio as a percentage with enough digits for error rates (`0.12%`, `5.0%`).
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == 0.0 {
        "0%".to_string()
    } else if p.abs() < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// A duration in seconds the way people read latencies (`850µs`, `12.3ms`, `1.20s`).
pub fn latency(seconds: f64) -> String {
    if seconds < 0.001 {
        format!("{:.0}µs", seconds * 1e6)
    } else if seconds < 1.0 {
        let ms = seconds * 1e3;
        if ms < 10.0 {
            format!("{ms:.1}ms")
        } else {
            format!("{ms:.0}ms")
        }
    } else {
        format!("{seconds:.2}s")
    }
}

/// A whole-second duration as `1m05s` / `42s`.
pub fn short_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims() {
        let mut t = Table::new(["APP", "PHASE"]);
        t.row(["checkout", "Progressing"]);
        t.row(["a", ""]);
        assert_eq!(t.render(), "APP       PHASE\ncheckout  Progressing\na\n");
    }

    #[test]
    fn bar_is_clamped() {
        assert_eq!(progress_bar(0.5, 4), "[##..]");
        assert_eq!(progress_bar(2.0, 4), "[####]");
        assert_eq!(progress_bar(f64::NAN, 2), "[..]");
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(percent(0.001), "0.10%");
        assert_eq!(percent(0.05), "5.0%");
        assert_eq!(latency(0.0123), "12ms");
        assert_eq!(latency(0.0021), "2.1ms");
        assert_eq!(short_duration(65.0), "1m05s");
    }

    #[test]
    fn yaml_and_json_render_the_same_value() {
        let v = serde_json::json!({"id": "r1", "phase": "Succeeded"});
        let json = render_machine(OutputFormat::Json, &v).unwrap().unwrap();
        assert!(json.contains("\"phase\": \"Succeeded\""));
        let yaml = render_machine(OutputFormat::Yaml, &v).unwrap().unwrap();
        assert!(yaml.contains("phase: Succeeded"), "{yaml}");
        assert!(render_machine(OutputFormat::Table, &v).unwrap().is_none());
    }
}
