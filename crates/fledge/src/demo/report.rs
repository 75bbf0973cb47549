//! What the demo prints: the live frame while the rollout runs, and the verdict.
//!
//! Pure functions of what was measured, so the wording and the figures are tested
//! without running a demo.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fledge_api::rollout::Rollout;
use fledge_engine::Phase;

use crate::view::follow::change_key;
use crate::view::output::{latency, percent};
use crate::view::render::{self, timestamp_ms};

use super::load::{LoadSnapshot, VersionSeen};

/// Requests and errors the proxy counted for one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCount {
    /// Requests answered (or failed).
    pub requests: u64,
    /// Of those, 5xx from the upstream or failures to reach it.
    pub errors: u64,
}

/// Everything one frame of the live view shows.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Time since the demo applied the rollout.
    pub elapsed: Duration,
    /// The rollout as the API shows it.
    pub rollout: &'a Rollout,
    /// What users saw.
    pub load: &'a LoadSnapshot,
    /// The stable and canary version labels.
    pub versions: (&'a str, &'a str),
    /// What the proxy counted for stable and canary.
    pub proxy: (ProxyCount, ProxyCount),
}

// === impl Frame ===

impl Frame<'_> {
    /// The frame as text.
    pub fn render(&self) -> String {
        let mut out = format!("[{:5.1}s] ", self.elapsed.as_secs_f64());
        out.push_str(&render::live(self.rollout));
        let (stable, canary) = self.versions;
        out.push_str(&format!(
            "\n  users saw   {}   {}\n",
            seen_label(stable, &self.load.version(stable)),
            seen_label(canary, &self.load.version(canary)),
        ));
        out.push_str(&format!(
            "  proxy       {}   {}\n",
            count_label(stable, self.proxy.0),
            count_label(canary, self.proxy.1),
        ));
        out
    }

    /// What, on a pipe, makes a new frame worth printing.
    pub fn change_key(&self) -> String {
        change_key(self.rollout)
    }
}

fn seen_label(version: &str, seen: &VersionSeen) -> String {
    format!(
        "{version}: {} answers, {} failed",
        seen.requests, seen.errors
    )
}

fn count_label(version: &str, count: ProxyCount) -> String {
    format!(
        "{version}: {} requests, {} errors",
        count.requests, count.errors
    )
}

/// How the demo's rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The canary became the stable version.
    Promoted,
    /// The canary was rolled back (`Failed` by the engine, or `Aborted`).
    RolledBack,
    /// The demo's time ran out first, in this phase.
    Unfinished(String),
}

/// The demo's conclusion, with its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// How it ended.
    pub outcome: Outcome,
    /// The app.
    pub app: String,
    /// The stable and canary versions.
    pub versions: (String, String),
    /// The decision's own sentence (why it failed, or how it succeeded).
    pub reason: Option<String>,
    /// From the canary's first request to the decision.
    pub decision_after: Option<Duration>,
    /// What users saw from stable and from the canary.
    pub seen: (VersionSeen, VersionSeen),
    /// What the proxy counted for stable and canary.
    pub proxy: (ProxyCount, ProxyCount),
    /// Requests the proxy itself failed, and requests with no answer.
    pub other_failures: u64,
}

// === impl Verdict ===

impl Verdict {
    /// Reads the verdict from the final rollout and the counts. `canary_first` is
    /// when the canary backend got its first request; `seen_decided` when the demo
    /// saw the rollout end (used when the history has no decision time).
    pub fn new(
        rollout: &Rollout,
        versions: (&str, &str),
        canary_first: Option<SystemTime>,
        seen_decided: SystemTime,
        load: &LoadSnapshot,
        proxy: (ProxyCount, ProxyCount),
    ) -> Self {
        let outcome = match rollout.phase {
            Phase::Succeeded => Outcome::Promoted,
            Phase::Failed | Phase::Aborted => Outcome::RolledBack,
            other => Outcome::Unfinished(other.as_str().to_string()),
        };
        let decision = render::decision_event(rollout);
        let decided_ms = match &outcome {
            Outcome::Unfinished(_) => None,
            _ => Some(
                decision
                    .and_then(|e| timestamp_ms(&e.at))
                    .unwrap_or_else(|| epoch_ms(seen_decided)),
            ),
        };
        let decision_after = match (decided_ms, canary_first) {
            (Some(decided), Some(first)) => {
                let ms = (decided - epoch_ms(first)).max(0);
                Some(Duration::from_millis(ms as u64))
            }
            _ => None,
        };
        Self {
            outcome,
            app: rollout.app.clone(),
            versions: (versions.0.to_string(), versions.1.to_string()),
            reason: decision.map(|e| e.message.clone()),
            decision_after,
            seen: (load.version(versions.0), load.version(versions.1)),
            proxy,
            other_failures: load.proxy_errors + load.transport_errors,
        }
    }

    /// The verdict lines.
    pub fn render(&self) -> String {
        let (stable, canary) = (&self.versions.0, &self.versions.1);
        let mut out = String::new();
        let after = |what: &str| match self.decision_after {
            Some(d) => format!(
                "  {what}: {:.1} s (from the canary's first request to the decision)\n",
                d.as_secs_f64()
            ),
            None => format!("  {what}: unknown (the canary served no request)\n"),
        };
        match &self.outcome {
            Outcome::Promoted => {
                out.push_str(&format!(
                    "Verdict: PROMOTED: {} {canary} is the new stable version.\n",
                    self.app
                ));
                out.push_str(&after("time to promote"));
            }
            Outcome::RolledBack => {
                out.push_str(&format!(
                    "Verdict: ROLLED BACK: {} {canary} was rolled back; all traffic is on {stable} again.\n",
                    self.app
                ));
                if let Some(reason) = &self.reason {
                    out.push_str(&format!("  reason: {reason}\n"));
                }
                out.push_str(&after("time to detect"));
            }
            Outcome::Unfinished(phase) => {
                out.push_str(&format!(
                    "Verdict: UNDECIDED: the rollout of {} {canary} was still {phase} when the demo's time ran out.\n",
                    self.app
                ));
            }
        }
        let c = &self.seen.1;
        out.push_str(&format!(
            "  failed canary requests users saw: {} (load generator: {} of {} answers; proxy counted {} of {})\n",
            c.errors, c.errors, c.requests, self.proxy.1.errors, self.proxy.1.requests
        ));
        let s = &self.seen.0;
        out.push_str(&format!(
            "  requests users sent: {stable} {} answers ({} failed, {}), {canary} {} answers ({} failed, {})",
            s.requests,
            s.errors,
            rate(s.errors, s.requests),
            c.requests,
            c.errors,
            rate(c.errors, c.requests)
        ));
        if self.other_failures > 0 {
            out.push_str(&format!(
                ", {} failed without reaching a version",
                self.other_failures
            ));
        }
        out.push('\n');
        out.push_str(&format!(
            "  latency users saw (p50 / p95): {stable} {}, {canary} {}\n",
            quantiles(s),
            quantiles(c)
        ));
        out
    }
}

fn quantiles(seen: &VersionSeen) -> String {
    match (seen.latency.quantile(0.5), seen.latency.quantile(0.95)) {
        (Some(p50), Some(p95)) => format!("{} / {}", latency(p50), latency(p95)),
        _ => "-".to_string(),
    }
}

fn rate(errors: u64, requests: u64) -> String {
    if requests == 0 {
        "-".to_string()
    } else {
        percent(errors as f64 / requests as f64)
    }
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(phase: &str, decided_at: &str) -> Rollout {
        let event = |seq: i64, at: &str, kind: &str, message: &str| {
            json!({"id": seq, "rolloutId": "r1", "app": "demo-shop", "seq": seq, "at": at,
                   "kind": kind, "actor": "engine", "message": message, "evidence": null})
        };
        serde_json::from_value(json!({
            "id": "r1", "app": "demo-shop", "version": "v2", "phase": phase,
            "stageIndex": 0, "canaryWeight": 0, "stages": [{"traffic": 10, "duration": "10s"}],
            "canary": null, "createdAt": "2026-01-01T00:00:00.000Z",
            "updatedAt": decided_at, "finishedAt": null, "revision": 3, "analysis": null,
            "allowedActions": [], "stageStartedAt": null, "stageEndsAt": null,
            "stageRemainingMs": null,
            "events": [
                event(1, "2026-01-01T00:00:00.000Z", "Started", "started"),
                event(2, decided_at, phase, "error_rate 5.3% (n=152) ≥ 1%"),
            ]
        }))
        .unwrap()
    }

    fn load() -> LoadSnapshot {
        let mut l = LoadSnapshot {
            sent: 1000,
            ..Default::default()
        };
        l.by_version.insert(
            "v1".into(),
            VersionSeen {
                requests: 840,
                errors: 1,
                ..Default::default()
            },
        );
        l.by_version.insert(
            "v2".into(),
            VersionSeen {
                requests: 152,
                errors: 8,
                latency: {
                    let mut h = fledge_stats::LatencyHistogram::default();
                    for _ in 0..152 {
                        h.record(0.04);
                    }
                    h
                },
                ..Default::default()
            },
        );
        l
    }

    /// The verdict on a `v1` → `v2` rollout that ended in `phase` at `decided_at`,
    /// with the canary's first request at `first` and [`load`]'s users.
    fn verdict(
        phase: &str,
        decided_at: &str,
        first: Option<SystemTime>,
        proxy: (ProxyCount, ProxyCount),
    ) -> Verdict {
        Verdict::new(
            &view(phase, decided_at),
            ("v1", "v2"),
            first,
            SystemTime::now(),
            &load(),
            proxy,
        )
    }

    #[test]
    fn a_rollback_reports_detection_time_and_failed_requests() {
        let first = UNIX_EPOCH + Duration::from_millis(1_767_225_600_000 + 500);
        let v = verdict(
            "Failed",
            "2026-01-01T00:00:04.700Z",
            Some(first),
            (
                ProxyCount {
                    requests: 841,
                    errors: 1,
                },
                ProxyCount {
                    requests: 152,
                    errors: 8,
                },
            ),
        );
        assert_eq!(v.outcome, Outcome::RolledBack);
        assert_eq!(v.decision_after, Some(Duration::from_millis(4200)));
        let text = v.render();
        assert!(
            text.starts_with("Verdict: ROLLED BACK: demo-shop v2"),
            "{text}"
        );
        for line in [
            "reason: error_rate 5.3% (n=152) ≥ 1%",
            "time to detect: 4.2 s",
            "latency users saw (p50 / p95): v1 -, v2 ",
            "failed canary requests users saw: 8 (load generator: 8 of 152 answers; proxy counted 8 of 152)",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn a_promotion_reports_its_time() {
        let first = UNIX_EPOCH + Duration::from_millis(1_767_225_600_000);
        let v = verdict(
            "Succeeded",
            "2026-01-01T00:00:21.000Z",
            Some(first),
            Default::default(),
        );
        let text = v.render();
        assert!(text.starts_with("Verdict: PROMOTED: demo-shop v2 is the new stable version."));
        assert!(text.contains("time to promote: 21.0 s"), "{text}");
    }

    #[test]
    fn an_unfinished_rollout_says_so() {
        let v = verdict(
            "Progressing",
            "2026-01-01T00:00:21.000Z",
            None,
            Default::default(),
        );
        assert!(v.render().starts_with("Verdict: UNDECIDED"));
    }
}
