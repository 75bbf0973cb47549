//! Hooks: commands and HTTP calls at points of a rollout's life (the spec's `hooks:`).
//!
//! The server calls [`run_point`] at each lifecycle point with the spec's hook lists
//! and a [`HookContext`] describing the rollout; it gets back one [`HookOutcome`] per
//! hook run (to write into the rollout's events) and whether the point passed.
//!
//! - **exec** runs `command` without a shell (write `[sh, -c, "..."]` to ask for one),
//!   in its own process group, with `FLEDGE_APP`, `FLEDGE_VERSION`,
//!   `FLEDGE_STABLE_VERSION`, `FLEDGE_ROLLOUT`, `FLEDGE_HOOK`, `FLEDGE_STAGE` and
//!   `FLEDGE_CANARY_WEIGHT` in its environment and the context as JSON on standard
//!   input. Success is exit status 0. At the timeout the whole process group is
//!   killed. Standard output and error are kept up to a bound each (the rest is read
//!   and dropped, so a chatty command never blocks on a full pipe).
//! - **http** sends the context as a JSON body (method `POST` unless the hook says
//!   otherwise) with the hook's headers. Success is a 2xx answer. The answer's body is
//!   kept up to the same bound. Header values are never logged or recorded.
//!
//! Gate points (`beforeRollout`, `eachStage`, `beforePromotion`) stop at the first
//! failing hook: the point failed and the rollout fails. The other points run every
//! hook and only record failures.

use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fledge_spec::{ExecHook, Hook, HookList, Hooks, HttpHook};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Bytes of output kept per stream by default.
pub const DEFAULT_MAX_OUTPUT: usize = 16 * 1024;

/// What a rollout looks like to a hook or a notification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutInfo {
    /// The rollout's id.
    pub id: String,
    /// The app.
    pub app: String,
    /// The version being rolled out.
    pub version: String,
    /// The version it replaces.
    pub stable_version: String,
    /// The rollout's phase (`Progressing`, `Failed`, ...).
    pub phase: String,
    /// The current stage, 0-based.
    pub stage_index: Option<usize>,
    /// The canary's current share, 0–100.
    pub canary_weight: u8,
}

/// What a hook is told: the JSON body of an HTTP hook and the standard input of an
/// exec hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookContext {
    /// Where in the rollout's life the hook runs.
    pub hook: HookList,
    /// The rollout.
    pub rollout: RolloutInfo,
    /// The event, for `onEvent` hooks (as the server records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
}

/// The result of one hook run, for the rollout's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookOutcome {
    /// The point it ran at.
    pub hook: HookList,
    /// Its position in the point's list.
    pub index: usize,
    /// `exec` or `http`.
    pub kind: String,
    /// The program, or the URL without query string or credentials.
    pub target: String,
    /// Exit status 0, or a 2xx answer.
    pub success: bool,
    /// The exit status, when the command exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The HTTP status, when the call was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Standard output, or the HTTP answer's body, up to the bound.
    pub stdout: String,
    /// Standard error (exec only), up to the bound.
    pub stderr: String,
    /// Whether output was cut at the bound.
    pub truncated: bool,
    /// How long it ran.
    pub duration_ms: u64,
    /// Why it failed without an answer (timeout, cannot start, unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of every hook run at one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointOutcome {
    /// The point.
    pub hook: HookList,
    /// `false` when a gate's hook failed (the rollout must fail); always `true` for
    /// points that only record.
    pub passed: bool,
    /// One outcome per hook run, in order.
    pub outcomes: Vec<HookOutcome>,
}

/// Runs `hooks.onEvent` once for each of `events` (each the event as hooks receive it:
/// `kind`, `actor`, `message`, `evidence`, `at`), in order, in a task of its own, so
/// the write that made the events never waits for them. A failure is logged with the
/// hook's captured output, never acted on. Needs a tokio runtime.
pub fn spawn_on_events(
    runner: HookRunner,
    hooks: &Hooks,
    rollout: RolloutInfo,
    events: Vec<serde_json::Value>,
) {
    if hooks.on_event.is_empty() || events.is_empty() {
        return;
    }
    let hooks = Hooks {
        on_event: hooks.on_event.clone(),
        ..Default::default()
    };
    tokio::spawn(async move {
        for event in events {
            let kind = event["kind"].as_str().unwrap_or_default().to_owned();
            let ctx = HookContext {
                hook: HookList::OnEvent,
                rollout: rollout.clone(),
                event: Some(event),
            };
            let outcome = run_point(&runner, &hooks, &ctx).await;
            for o in outcome.outcomes.iter().filter(|o| !o.success) {
                tracing::warn!(rollout = %rollout.id, event = %kind, hook = "onEvent",
                    index = o.index, kind = %o.kind, target = %o.target,
                    exit_code = ?o.exit_code, http_status = ?o.http_status,
                    error = o.error.as_deref().unwrap_or(""), stderr = %o.stderr,
                    "onEvent hook failed");
            }
        }
    });
}

// === impl PointOutcome ===

impl PointOutcome {
    /// What failed, in one line (`http https://… answered 503`, `exec ./check exited
    /// with 1`), for the engine's `HookDone`; `None` when the point passed.
    pub fn failure(&self) -> Option<String> {
        if self.passed {
            return None;
        }
        let described = self.outcomes.iter().find(|o| !o.success).map(|o| {
            let why = o
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .or_else(|| o.exit_code.map(|c| format!(" exited with {c}")))
                .or_else(|| o.http_status.map(|s| format!(" answered {s}")))
                .unwrap_or_default();
            format!("{} {}{why}", o.kind, o.target)
        });
        Some(described.unwrap_or_else(|| "a hook failed".to_owned()))
    }
}

/// Runs one hook. The server's tests can replace the real runner.
#[async_trait]
pub trait HookExecutor: Send + Sync + std::fmt::Debug {
    /// Runs `hook` (number `index` of its point) with `ctx`; never fails, the outcome
    /// says what happened.
    async fn run(&self, hook: &Hook, index: usize, ctx: &HookContext) -> HookOutcome;
}

/// Runs the hooks of `ctx.hook` in order. At a gate point it stops at the first
/// failure and reports the point failed.
pub async fn run_point<E: HookExecutor + ?Sized>(
    executor: &E,
    hooks: &Hooks,
    ctx: &HookContext,
) -> PointOutcome {
    let point = ctx.hook;
    let mut outcomes = Vec::new();
    let mut passed = true;
    for (index, hook) in hooks.list(point).iter().enumerate() {
        let outcome = executor.run(hook, index, ctx).await;
        let ok = outcome.success;
        if ok {
            tracing::info!(hook = point.as_str(), index, kind = %outcome.kind, target = %outcome.target, "hook succeeded");
        } else {
            tracing::warn!(
                hook = point.as_str(), index, kind = %outcome.kind, target = %outcome.target,
                exit_code = ?outcome.exit_code, http_status = ?outcome.http_status, error = ?outcome.error,
                "hook failed"
            );
        }
        outcomes.push(outcome);
        if !ok && point.is_gate() {
            passed = false;
            break;
        }
    }
    PointOutcome {
        hook: point,
        passed,
        outcomes,
    }
}

/// The real hook runner: processes and HTTP calls.
#[derive(Debug, Clone)]
pub struct HookRunner {
    client: reqwest::Client,
    max_output: usize,
}

// === impl HookRunner ===

impl HookRunner {
    /// A runner keeping at most `max_output` bytes of each output stream.
    pub fn new(max_output: usize) -> Result<Self, reqwest::Error> {
        // Each hook sets its own timeout; this is only the ceiling.
        let client = crate::tls::http_client(Duration::from_secs(3600))?;
        Ok(HookRunner { client, max_output })
    }

    async fn exec(&self, hook: &ExecHook, ctx: &HookContext, outcome: &mut HookOutcome) {
        let Some((program, args)) = hook.command.split_first() else {
            outcome.error = Some("empty command".to_owned());
            return;
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .env("FLEDGE_APP", &ctx.rollout.app)
            .env("FLEDGE_VERSION", &ctx.rollout.version)
            .env("FLEDGE_STABLE_VERSION", &ctx.rollout.stable_version)
            .env("FLEDGE_ROLLOUT", &ctx.rollout.id)
            .env("FLEDGE_HOOK", ctx.hook.as_str())
            .env(
                "FLEDGE_CANARY_WEIGHT",
                ctx.rollout.canary_weight.to_string(),
            )
            .env(
                "FLEDGE_STAGE",
                ctx.rollout
                    .stage_index
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            );
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                outcome.error = Some(format!("cannot start `{program}`: {e}"));
                return;
            }
        };
        let pid = child.id();
        let payload = serde_json::to_vec(ctx).unwrap_or_default();
        let stdin = child.stdin.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input closes the pipe: not an error.
                let _ = stdin.write_all(&payload).await;
            }
        };
        let max = self.max_output;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async {
            let (_, out, err, status) = tokio::join!(
                feed,
                read_bounded(stdout, max),
                read_bounded(stderr, max),
                child.wait()
            );
            (out, err, status)
        };
        match tokio::time::timeout(hook.timeout, run).await {
            Ok(((out, out_cut), (err, err_cut), status)) => {
                outcome.stdout = out;
                outcome.stderr = err;
                outcome.truncated = out_cut || err_cut;
                match status {
                    Ok(s) => {
                        outcome.exit_code = s.code();
                        outcome.success = s.success();
                        if s.code().is_none() {
                            outcome.error = Some(format!("`{program}` was killed by a signal"));
                        }
                    }
                    Err(e) => outcome.error = Some(format!("waiting for `{program}`: {e}")),
                }
            }
            Err(_) => {
                if let Some(pid) = pid {
                    kill_group(pid).await;
                }
                outcome.error = Some(format!(
                    "`{program}` timed out after {}; its process group was killed",
                    fledge_spec::duration::format(hook.timeout)
                ));
            }
        }
    }

    async fn http(&self, hook: &HttpHook, ctx: &HookContext, outcome: &mut HookOutcome) {
        let method = match reqwest::Method::from_bytes(hook.method.to_ascii_uppercase().as_bytes())
        {
            Ok(m) => m,
            Err(_) => {
                outcome.error = Some(format!("`{}` is not an HTTP method", hook.method));
                return;
            }
        };
        let mut req = self
            .client
            .request(method, &hook.url)
            .timeout(hook.timeout)
            .json(ctx);
        for (k, v) in &hook.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // A server that accepts and never answers is not unreachable: say
            // that it kept the hook waiting.
            Err(e) if e.is_timeout() => {
                outcome.error = Some(format!(
                    "{} timed out after {} without an answer",
                    outcome.target,
                    fledge_spec::duration::format(hook.timeout)
                ));
                return;
            }
            Err(e) => {
                outcome.error = Some(format!(
                    "{} is unreachable: {}",
                    outcome.target,
                    crate::metrics::error_chain(&e.without_url())
                ));
                return;
            }
        };
        let status = resp.status();
        outcome.http_status = Some(status.as_u16());
        outcome.success = status.is_success();
        let (body, cut) = read_body_bounded(resp, self.max_output).await;
        outcome.stdout = body;
        outcome.truncated = cut;
    }
}

#[async_trait]
impl HookExecutor for HookRunner {
    async fn run(&self, hook: &Hook, index: usize, ctx: &HookContext) -> HookOutcome {
        let started = Instant::now();
        let (kind, target) = match hook {
            Hook::Exec(e) => ("exec", e.command.first().cloned().unwrap_or_default()),
            Hook::Http(h) => ("http", redact_url(&h.url)),
        };
        let mut outcome = HookOutcome {
            hook: ctx.hook,
            index,
            kind: kind.to_owned(),
            target,
            success: false,
            exit_code: None,
            http_status: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 0,
            error: None,
        };
        match hook {
            Hook::Exec(e) => self.exec(e, ctx, &mut outcome).await,
            Hook::Http(h) => self.http(h, ctx, &mut outcome).await,
        }
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        outcome
    }
}

/// A URL without its query string, fragment and credentials, for events and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// Reads a stream to its end, keeping the first `max` bytes.
async fn read_bounded<R: AsyncRead + Unpin>(reader: Option<R>, max: usize) -> (String, bool) {
    let Some(mut reader) = reader else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}

/// Reads an HTTP body, keeping the first `max` bytes and stopping there.
async fn read_body_bounded(mut resp: reqwest::Response, max: usize) -> (String, bool) {
    let mut kept = Vec::new();
    let mut cut = false;
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            cut = true;
            break;
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}

/// Kills process group `pgid` (the hook and everything it started).
async fn kill_group(pgid: u32) {
    // std has no killpg and this crate forbids unsafe code: kill(1) does it.
    let status = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if !matches!(status, Ok(s) if s.success()) {
        tracing::warn!(pgid, "could not kill a timed-out hook's process group");
    }
}

#[cfg(test)]
mod tests;
