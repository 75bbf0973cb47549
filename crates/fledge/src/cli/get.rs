//! `fledge get ROLLOUT [--watch]`: one rollout, once or as a live view.
//!
//! The live view follows the server-sent events of `GET /events` and refetches the
//! rollout whenever something happens (and once a second, for the stage's progress
//! bar and in case the stream is unavailable), then redraws in place on a terminal or
//! prints a new block when something changed on a pipe.
//!
//! This module also holds the typed views of the API's rollout JSON used by `apply`,
//! `status` and `demo`: they read only the fields they show and tolerate the others,
//! so a newer server never breaks an older CLI.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::client::{ApiClient, ClientArgs};
use super::output::{self, OutputFormat, Table};

/// Arguments of `fledge get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The rollout's id, or an app name (its active or latest rollout). Without it,
    /// a list of the latest rollouts.
    #[arg(value_name = "ROLLOUT")]
    pub id: Option<String>,

    /// Keep a live view open, redrawn as the rollout moves, until it ends.
    #[arg(long, short = 'w', requires = "id")]
    pub watch: bool,

    /// List only this app's rollouts.
    #[arg(long, conflicts_with = "id")]
    pub app: Option<String>,

    /// List only rollouts in this phase (`Progressing`, `Failed`, …).
    #[arg(long, conflicts_with = "id")]
    pub phase: Option<String>,
}

/// Runs `fledge get`.
pub async fn run(client_args: &ClientArgs, args: &GetArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::from_args(client_args)?;
    let Some(id) = &args.id else {
        let raw = client
            .rollouts(args.app.as_deref(), args.phase.as_deref())
            .await?;
        match output::render_machine(client_args.output, &raw)? {
            Some(text) => print!("{text}"),
            None => print!("{}", render_list(&raw)),
        }
        return Ok(ExitCode::SUCCESS);
    };
    if args.watch {
        let final_view = follow(&client, id, client_args.output, Target::Stdout).await?;
        if client_args.output != OutputFormat::Table {
            print!(
                "{}",
                output::render_machine(client_args.output, &final_view.raw)?.unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let raw = client.rollout(id).await?;
    match output::render_machine(client_args.output, &raw)? {
        Some(text) => print!("{text}"),
        None => print!("{}", RolloutView::from_value(&raw).render_detail(now_ms())),
    }
    Ok(ExitCode::SUCCESS)
}

/// The table of `GET /rollouts` (a list, or an object with `rollouts`).
pub fn render_list(raw: &Value) -> String {
    let list = match raw {
        Value::Array(a) => a.as_slice(),
        _ => raw
            .get("rollouts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
    };
    if list.is_empty() {
        return "no rollouts\n".to_string();
    }
    let mut t = Table::new([
        "ID", "APP", "VERSION", "PHASE", "STAGE", "WEIGHT", "UPDATED",
    ]);
    for r in list {
        let v = RolloutView::from_value(r);
        t.row([
            v.id.clone(),
            v.app.clone(),
            v.version.clone(),
            v.phase.clone(),
            v.stage_label(),
            v.weight_label(),
            v.updated_at
                .as_ref()
                .map(|u| match u {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default(),
        ]);
    }
    t.render()
}

// ---------------------------------------------------------------------------------
// Views of the API's JSON

/// A rollout as `GET /rollouts/{id}` returns it, with the raw JSON kept for `-o`.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// The fields the CLI shows.
    pub view: RolloutView,
    /// Exactly what the server sent.
    pub raw: Value,
}

/// The fields of a rollout the CLI renders.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutView {
    /// The rollout's id.
    #[serde(deserialize_with = "de_text")]
    pub id: String,
    /// The app it changes.
    pub app: String,
    /// The version it rolls out.
    pub version: String,
    /// `Pending`, `Progressing`, `Paused`, `Succeeded`, `Failed` or `Aborted`.
    pub phase: String,
    /// The current stage, 0-based.
    pub stage_index: Option<usize>,
    /// The canary's current share of traffic, in percent.
    pub canary_weight: Option<f64>,
    /// The spec's stages.
    pub stages: Vec<StageView>,
    /// When the current stage started (ms since the epoch or RFC 3339), if the server
    /// says.
    pub stage_started_at: Option<Value>,
    /// When the rollout was created.
    pub created_at: Option<Value>,
    /// When it last changed.
    pub updated_at: Option<Value>,
    /// A human sentence about the current state, if the server gives one.
    pub message: Option<String>,
    /// The latest analysis.
    pub analysis: Option<AnalysisView>,
    /// The history.
    pub events: Vec<EventView>,
}

/// One stage of the spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StageView {
    /// Canary share in percent.
    pub traffic: f64,
    /// How long the stage runs (`10s`, or a number of seconds).
    pub duration: Option<Value>,
    /// The stage's criteria as written.
    pub success_criteria: Vec<Value>,
    /// The final stage.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Promote automatically at the final stage.
    pub promote: bool,
}

/// The latest analysis of a rollout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisView {
    /// When it ran.
    pub at: Option<Value>,
    /// The stage it judged.
    pub stage_index: Option<usize>,
    /// One entry per criterion.
    pub criteria: Vec<EvidenceView>,
}

/// The evidence on one criterion.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EvidenceView {
    /// The criterion as written.
    pub criterion: String,
    /// `pass`, `fail`, `notEnoughData`, `undecided`.
    pub status: String,
    /// `ratio`, `seconds`, `perSecond`, `plain`.
    pub unit: String,
    /// The canary arm.
    pub canary: Option<ArmView>,
    /// The stable arm.
    pub stable: Option<ArmView>,
    /// The bound compared with.
    pub threshold: Option<f64>,
    /// The sequential statistics.
    pub sequential: Option<SequentialView>,
    /// One human sentence.
    pub summary: String,
}

/// What was measured on one arm.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ArmView {
    /// The value in canonical units.
    pub value: Option<f64>,
    /// The sample size.
    pub requests: u64,
    /// Bad events, for count metrics.
    pub bad: Option<u64>,
}

/// Sequential-test statistics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SequentialView {
    /// The abort e-value.
    pub e_value: f64,
    /// The e-value that decides.
    pub e_threshold: f64,
}

/// One entry of a rollout's history.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventView {
    /// When it happened.
    pub at: Option<Value>,
    /// What kind of event (`StageStarted`, `Failed`, …).
    #[serde(alias = "type", alias = "kind")]
    pub event: Option<String>,
    /// Who decided: the engine or an operator's identity.
    pub actor: Option<Value>,
    /// A human sentence.
    #[serde(alias = "summary")]
    pub message: Option<String>,
    /// Where the event left the rollout.
    pub phase: Option<String>,
    /// The evidence of a decision.
    pub evidence: Option<Value>,
}

/// Accepts a string or a number as text (ids may be either).
fn de_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

// === impl Rollout ===

impl Rollout {
    /// Reads the view out of the server's JSON.
    pub fn from_value(raw: Value) -> Self {
        Self {
            view: RolloutView::from_value(&raw),
            raw,
        }
    }
}

// === impl RolloutView ===

impl RolloutView {
    /// Reads the known fields; a malformed field reads as its default rather than
    /// failing the whole view.
    pub fn from_value(raw: &Value) -> Self {
        match RolloutView::deserialize(raw) {
            Ok(view) => view,
            Err(_) => {
                // A field of an unexpected type: keep what can be read field by field.
                let get = |k: &str| raw.get(k).cloned().unwrap_or(Value::Null);
                RolloutView {
                    id: match get("id") {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        v => v.to_string(),
                    },
                    app: get("app").as_str().unwrap_or_default().to_string(),
                    version: get("version").as_str().unwrap_or_default().to_string(),
                    phase: get("phase").as_str().unwrap_or_default().to_string(),
                    stage_index: get("stageIndex").as_u64().map(|v| v as usize),
                    canary_weight: get("canaryWeight").as_f64(),
                    stages: serde_json::from_value(get("stages")).unwrap_or_default(),
                    analysis: serde_json::from_value(get("analysis")).ok(),
                    events: serde_json::from_value(get("events")).unwrap_or_default(),
                    ..Default::default()
                }
            }
        }
    }

    /// Whether the rollout has ended (`Succeeded`, `Failed` or `Aborted`).
    pub fn is_terminal(&self) -> bool {
        is_terminal_phase(&self.phase)
    }

    /// `2/3`: the current stage (1-based) of the number of stages.
    pub fn stage_label(&self) -> String {
        match (self.stage_index, self.stages.len()) {
            (Some(i), 0) => format!("{}", i + 1),
            (Some(i), n) => format!("{}/{}", (i + 1).min(n), n),
            (None, 0) => "-".to_string(),
            (None, n) => format!("-/{n}"),
        }
    }

    /// `10%`, or `-` when unknown.
    pub fn weight_label(&self) -> String {
        self.canary_weight
            .map(|w| format!("{}%", trim_float(w)))
            .unwrap_or_else(|| "-".to_string())
    }

    /// The current stage's duration in seconds, when it has one.
    pub fn stage_duration_seconds(&self) -> Option<f64> {
        let stage = self.stages.get(self.stage_index?)?;
        duration_seconds(stage.duration.as_ref()?)
    }

    /// When the current stage started, in ms since the epoch: the server's
    /// `stageStartedAt`, or the latest history entry that started a stage.
    pub fn stage_started_ms(&self) -> Option<i64> {
        if let Some(ms) = self.stage_started_at.as_ref().and_then(timestamp_ms) {
            return Some(ms);
        }
        self.events
            .iter()
            .rev()
            .find(|e| {
                let kind = e.event.as_deref().unwrap_or_default().to_ascii_lowercase();
                kind.contains("stage") || kind.contains("start") || kind.contains("created")
            })
            .and_then(|e| e.at.as_ref().and_then(timestamp_ms))
    }

    /// The event that ended the rollout: the latest one named after its phase
    /// (`Failed`, `Aborted`, `Succeeded`), else the latest that says it decided.
    pub fn decision_event(&self) -> Option<&EventView> {
        let kind = |e: &EventView| e.event.as_deref().unwrap_or_default().to_ascii_lowercase();
        let phase = self.phase.to_ascii_lowercase();
        if let Some(e) = self
            .events
            .iter()
            .rev()
            .find(|e| !phase.is_empty() && kind(e) == phase)
        {
            return Some(e);
        }
        self.events.iter().rev().find(|e| {
            let k = kind(e);
            e.phase.as_deref().is_some_and(is_terminal_phase)
                || ["fail", "abort", "rollback", "rolledback", "succeed"]
                    .iter()
                    .any(|w| k.contains(w))
        })
    }

    /// The one-shot rendering of `fledge get`.
    pub fn render_detail(&self, now_ms: i64) -> String {
        let mut out = String::new();
        let mut head = Table::new(["ID", "APP", "VERSION", "PHASE", "STAGE", "WEIGHT"]);
        head.row([
            self.id.clone(),
            self.app.clone(),
            self.version.clone(),
            self.phase.clone(),
            self.stage_label(),
            self.weight_label(),
        ]);
        out.push_str(&head.render());
        out.push_str(&self.render_body(now_ms));
        if !self.events.is_empty() {
            out.push_str("\nHistory:\n");
            let mut t = Table::new(["TIME", "EVENT", "BY", "MESSAGE"]);
            for e in &self.events {
                t.row([
                    e.at.as_ref()
                        .and_then(timestamp_ms)
                        .map(clock)
                        .unwrap_or_default(),
                    e.event.clone().unwrap_or_default(),
                    e.actor.as_ref().map(actor_label).unwrap_or_default(),
                    e.message.clone().unwrap_or_default(),
                ]);
            }
            out.push_str(&indent(&t.render()));
        }
        out
    }

    /// The live view of `get --watch` and `apply --wait`.
    pub fn render_live(&self, now_ms: i64) -> String {
        let mut out = format!(
            "Rollout {}  {} → {}  {}\n",
            self.id, self.app, self.version, self.phase
        );
        out.push_str(&format!(
            "Stage {}  weight {}",
            self.stage_label(),
            self.weight_label()
        ));
        match (self.stage_duration_seconds(), self.stage_started_ms()) {
            (Some(total), Some(started)) if !self.is_terminal() && total > 0.0 => {
                let elapsed = ((now_ms - started) as f64 / 1000.0).clamp(0.0, total);
                out.push_str(&format!(
                    "  {} {} / {}",
                    output::progress_bar(elapsed / total, 24),
                    output::short_duration(elapsed),
                    output::short_duration(total)
                ));
            }
            (None, _) if !self.is_terminal() && self.stage_index.is_some() => {
                out.push_str("  (waits for a manual promote)");
            }
            _ => {}
        }
        out.push('\n');
        out.push_str(&self.render_body(now_ms));
        out
    }

    /// Criteria and, on failure, the decision's evidence.
    fn render_body(&self, _now_ms: i64) -> String {
        let mut out = String::new();
        let shown_criteria = self
            .analysis
            .as_ref()
            .is_some_and(|a| !a.criteria.is_empty());
        if let Some(analysis) = &self.analysis
            && shown_criteria
        {
            out.push('\n');
            out.push_str(&indent(&criteria_table(&analysis.criteria).render()));
        }
        if matches!(self.phase.as_str(), "Failed" | "Aborted")
            && let Some(event) = self.decision_event()
        {
            out.push_str(&format!(
                "\nDecision: {}{}\n",
                event
                    .message
                    .clone()
                    .or_else(|| event.event.clone())
                    .unwrap_or_else(|| self.phase.clone()),
                event
                    .actor
                    .as_ref()
                    .map(|a| format!("  (by {})", actor_label(a)))
                    .unwrap_or_default()
            ));
            if let Some(evidence) = &event.evidence {
                out.push_str(&render_evidence(evidence, !shown_criteria));
            }
        } else if let Some(message) = &self.message
            && !message.is_empty()
        {
            out.push_str(&format!("\n{message}\n"));
        }
        out
    }
}

/// The criteria table: each criterion's canary and stable values, threshold, status.
pub fn criteria_table(criteria: &[EvidenceView]) -> Table {
    let mut t = Table::new(["CRITERION", "CANARY", "STABLE", "THRESHOLD", "STATUS"]);
    for c in criteria {
        t.row([
            c.criterion.clone(),
            c.canary
                .as_ref()
                .map(|a| arm_label(a, &c.unit))
                .unwrap_or_else(|| "-".into()),
            c.stable
                .as_ref()
                .map(|a| arm_label(a, &c.unit))
                .unwrap_or_else(|| "-".into()),
            c.threshold
                .map(|v| format_value(v, &c.unit))
                .unwrap_or_else(|| "-".into()),
            status_label(c),
        ]);
    }
    t
}

fn arm_label(arm: &ArmView, unit: &str) -> String {
    let value = arm
        .value
        .map(|v| format_value(v, unit))
        .unwrap_or_else(|| "no data".into());
    format!("{value} (n={})", arm.requests)
}

fn status_label(c: &EvidenceView) -> String {
    let status = match c.status.as_str() {
        "notEnoughData" => "not enough data",
        "" => "-",
        other => other,
    };
    match &c.sequential {
        Some(s) if s.e_threshold > 0.0 => {
            format!("{status} (E={:.3} / {:.0})", s.e_value, s.e_threshold)
        }
        _ => status.to_string(),
    }
}

/// Renders decision evidence: a list of per-criterion evidence, one criterion's
/// evidence, or whatever JSON the server attached. The criteria table is left out
/// when the view already shows the same criteria.
fn render_evidence(evidence: &Value, with_table: bool) -> String {
    let list: Option<Vec<EvidenceView>> = match evidence {
        Value::Array(_) => serde_json::from_value(evidence.clone()).ok(),
        Value::Object(map) if map.contains_key("criteria") => {
            serde_json::from_value(map["criteria"].clone()).ok()
        }
        Value::Object(map) if map.contains_key("criterion") => {
            serde_json::from_value(evidence.clone())
                .ok()
                .map(|e| vec![e])
        }
        _ => None,
    };
    match list {
        Some(list) if !list.is_empty() => {
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
        _ if evidence.is_null() => String::new(),
        _ => format!(
            "Evidence: {}\n",
            serde_json::to_string(evidence).unwrap_or_default()
        ),
    }
}

/// A value in canonical units, formatted by unit: `4.8%`, `512ms`, `12.5 rps`.
pub fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "ratio" => output::percent(v),
        "seconds" => output::latency(v),
        "perSecond" => format!("{} rps", trim_float(v)),
        _ => trim_float(v),
    }
}

fn actor_label(actor: &Value) -> String {
    match actor {
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .get("name")
            .or_else(|| map.get("id"))
            .or_else(|| map.get("kind"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| actor.to_string()),
        other => other.to_string(),
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

/// Whether a phase is one a rollout never leaves by itself.
pub fn is_terminal_phase(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed" | "Aborted")
}

/// A stage duration as seconds: `"10s"`, `"1m30s"`, or a number of seconds.
pub fn duration_seconds(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => humantime::parse_duration(s.trim())
            .ok()
            .map(|d| d.as_secs_f64()),
        _ => None,
    }
}

/// A timestamp as ms since the epoch: a number of ms, or an RFC 3339 string.
pub fn timestamp_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => humantime::parse_rfc3339_weak(s.trim()).ok().map(|t| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        }),
        _ => None,
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

// ---------------------------------------------------------------------------------
// Following a rollout

/// Where the live view goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`get --watch`).
    Stdout,
    /// Standard error, so that stdout stays clean for `-o json` (`apply --wait`).
    Stderr,
}

/// Redraws a block of text in place on a terminal, or prints it again when it
/// changed on a pipe.
#[derive(Debug)]
pub struct LiveView {
    target: Target,
    tty: bool,
    lines_drawn: usize,
    last: String,
}

// === impl LiveView ===

impl LiveView {
    /// A live view on `target`.
    pub fn new(target: Target) -> Self {
        let tty = match target {
            Target::Stdout => std::io::stdout().is_terminal(),
            Target::Stderr => std::io::stderr().is_terminal(),
        };
        Self {
            target,
            tty,
            lines_drawn: 0,
            last: String::new(),
        }
    }

    /// Whether the view redraws in place.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Shows `text`. On a pipe, `key` decides whether anything changed that is worth
    /// a new block (so a ticking progress bar does not flood a CI log).
    pub fn show(&mut self, text: &str, key: &str) {
        let mut buf = String::new();
        if self.tty {
            if text == self.last {
                return;
            }
            if self.lines_drawn > 0 {
                // Up to the first line of the previous block, and clear to the end.
                buf.push_str(&format!("\x1b[{}F\x1b[J", self.lines_drawn));
            }
            buf.push_str(text);
            self.lines_drawn = text.lines().count();
            self.last = text.to_string();
        } else {
            if key == self.last {
                return;
            }
            buf.push_str(text);
            buf.push('\n');
            self.last = key.to_string();
        }
        let _ = match self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf.as_bytes()).and_then(|_| out.flush())
            }
            Target::Stderr => {
                let mut out = std::io::stderr().lock();
                out.write_all(buf.as_bytes()).and_then(|_| out.flush())
            }
        };
    }
}

/// What, on a pipe, makes a new block worth printing: the state and each criterion's
/// status, not the ticking values.
fn change_key(view: &RolloutView) -> String {
    let mut key = format!(
        "{}|{}|{}",
        view.phase,
        view.stage_label(),
        view.weight_label()
    );
    if let Some(a) = &view.analysis {
        for c in &a.criteria {
            key.push('|');
            key.push_str(&c.status);
        }
    }
    key
}

/// Follows a rollout until it ends, showing the live view (table format only), and
/// returns its final state.
pub async fn follow(
    client: &ApiClient,
    id: &str,
    format: OutputFormat,
    target: Target,
) -> anyhow::Result<Rollout> {
    let mut view = LiveView::new(target);
    let show = format == OutputFormat::Table;
    // The event stream only says "something changed"; the rollout itself is always
    // refetched, so any event shape works and a missing stream just means polling.
    let mut events = client.events().await.ok().map(Box::pin);
    let mut tick = tokio::time::interval(Duration::from_millis(if view.is_tty() {
        500
    } else {
        1000
    }));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let rollout = Rollout::from_value(client.rollout(id).await?);
        if show {
            view.show(
                &rollout.view.render_live(now_ms()),
                &change_key(&rollout.view),
            );
        }
        if rollout.view.is_terminal() {
            return Ok(rollout);
        }
        // Wait for a change of a rollout (or its history), or the next tick; the
        // periodic `status` snapshots are not changes of a rollout.
        loop {
            let Some(stream) = events.as_mut() else {
                tick.tick().await;
                break;
            };
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(e)) if e.event == "status" => continue,
                    Some(Ok(_)) => break,
                    // Stream ended or broke: carry on polling.
                    _ => {
                        events = None;
                        break;
                    }
                },
                _ = tick.tick() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed_rollout() -> Value {
        json!({
            "id": "r-1", "app": "checkout", "version": "v2", "phase": "Failed",
            "stageIndex": 0, "canaryWeight": 0,
            "stages": [
                {"traffic": 10, "duration": "10s", "successCriteria": ["error_rate < 1%"]},
                {"traffic": 100, "final": true, "promote": true}
            ],
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
                {"at": 1_700_000_000_000i64, "type": "StageStarted", "message": "stage 1 at 10%"},
                {"at": 1_700_000_004_000i64, "type": "Failed", "actor": "engine",
                 "message": "error_rate 4.8% (n=1,204) ≥ 1%"}
            ]
        })
    }

    #[test]
    fn reads_the_fields_it_shows() {
        let v = RolloutView::from_value(&failed_rollout());
        assert_eq!(v.stage_label(), "1/2");
        assert_eq!(v.weight_label(), "0%");
        assert!(v.is_terminal());
        assert_eq!(v.stage_duration_seconds(), Some(10.0));
        assert_eq!(v.stage_started_ms(), Some(1_700_000_000_000));
        assert_eq!(v.decision_event().unwrap().event.as_deref(), Some("Failed"));
    }

    #[test]
    fn failed_view_shows_criteria_and_decision() {
        let text = RolloutView::from_value(&failed_rollout()).render_live(0);
        assert!(text.contains("error_rate < 1%"), "{text}");
        assert!(text.contains("4.8% (n=1204)"), "{text}");
        assert!(text.contains("fail (E=37.200 / 20)"), "{text}");
        assert!(
            text.contains("Decision: error_rate 4.8% (n=1,204) ≥ 1%  (by engine)"),
            "{text}"
        );
    }

    #[test]
    fn tolerates_unexpected_field_types() {
        let v = RolloutView::from_value(&json!({"id": 7, "phase": "Progressing", "stages": "x"}));
        assert_eq!(v.id, "7");
        assert_eq!(v.phase, "Progressing");
        assert!(v.stages.is_empty());
    }

    #[test]
    fn progress_bar_follows_the_stage_clock() {
        let mut r = failed_rollout();
        r["phase"] = json!("Progressing");
        let text = RolloutView::from_value(&r).render_live(1_700_000_005_000);
        assert!(
            text.contains("[############............] 5s / 10s"),
            "{text}"
        );
    }

    #[test]
    fn lists_rollouts_as_a_table() {
        let text =
            render_list(&json!([failed_rollout(), {"id": "r-2", "app": "b", "phase": "Pending"}]));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].starts_with("r-1") && lines[1].contains("Failed"),
            "{text}"
        );
        assert!(lines[2].starts_with("r-2"), "{text}");
        assert_eq!(render_list(&json!([])), "no rollouts\n");
    }

    #[test]
    fn timestamps_parse_from_numbers_and_text() {
        assert_eq!(timestamp_ms(&json!(5)), Some(5));
        assert_eq!(timestamp_ms(&json!("1970-01-01T00:00:01Z")), Some(1000));
        assert_eq!(clock(3_723_000), "01:02:03");
    }
}
