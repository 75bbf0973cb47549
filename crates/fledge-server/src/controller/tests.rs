//! The controller's tick and reconcile, driven in-process under tokio's paused
//! clock with a fake router and a fake metric source (see `crate::testing`).

use std::time::Duration;

use crate::apps::route_weight;
use crate::engine::{Command, summary};
use crate::testing::{APP, InProcess, Serving};
use fledge_api::app::Role;
use fledge_api::rollout::Action;

const SECOND: Duration = Duration::from_secs(1);

/// Two timed stages judged on the error rate, then a promoting final stage.
const TWO_STAGES: &str = "\
app: shop
version: v2
analysis:
  interval: 1s
  minRequests: 100
stages:
  - traffic: 20
    duration: 30s
    successCriteria:
      - error_rate < 1%
  - traffic: 50
    duration: 30s
    successCriteria:
      - error_rate < 1%
  - traffic: 100
    final: true
    promote: true
";

/// [`TWO_STAGES`], failed after `reads` failed analysis reads in a row.
fn failing_after(reads: u32) -> String {
    TWO_STAGES.replace(
        "  minRequests: 100\n",
        &format!("  minRequests: 100\n  maxConsecutiveErrors: {reads}\n"),
    )
}

fn stage(r: &fledge_store::RolloutRecord) -> usize {
    summary(&r.state).expect("the state reads").stage_index
}

async fn stable_version(h: &InProcess) -> String {
    h.shared
        .apps
        .get(APP)
        .await
        .unwrap()
        .config()
        .await
        .stable
        .version
}

#[tokio::test(start_paused = true)]
async fn a_healthy_canary_advances_stage_by_stage_to_succeeded() {
    let mut h = InProcess::start().await;
    let r = h.create(TWO_STAGES).await;
    assert_eq!((r.phase.as_str(), stage(&r)), ("Progressing", 0));
    assert_eq!(h.router.weights(), [0, 20]);

    // A stage lasts its duration of healthy analysis, and no less.
    h.run_for(29 * SECOND).await;
    assert_eq!(stage(&h.rollout(&r.id).await), 0);
    let r1 = h.run_until(&r.id, 3 * SECOND, |r| stage(r) == 1).await;
    assert_eq!(summary(&r1.state).unwrap().canary_weight, 50);
    assert_eq!(h.router.weights(), [0, 20, 50]);

    let done = h
        .run_until(&r.id, 35 * SECOND, |r| r.phase == "Succeeded")
        .await;
    let kinds = h.kinds(&r.id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "StageAdvanced").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("Succeeded"),
        "{kinds:?}"
    );
    assert_eq!(summary(&done.state).unwrap().canary_weight, 100);
    // The canary is the new stable version, and the router serves it alone.
    assert_eq!(stable_version(&h).await, "v2");
    let last = h.router.last().unwrap();
    assert_eq!(last.stable.version, "v2");
    assert!(last.canary.is_none(), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_is_rolled_back_to_weight_zero() {
    let mut h = InProcess::start().await;
    h.metrics.serve(Serving::FAILING_CANARY);
    let r = h.create(TWO_STAGES).await;
    let failed = h
        .run_until(&r.id, 30 * SECOND, |r| r.phase == "Failed")
        .await;
    assert_eq!(stage(&failed), 0, "never past the first stage");
    assert_eq!(summary(&failed.state).unwrap().canary_weight, 0);
    assert_eq!(h.router.weights(), [0, 20, 0]);
    let events = h.events(&r.id).await;
    let verdict = events.iter().find(|e| e.kind == "Failed").unwrap();
    assert_eq!(verdict.actor, "engine");
    assert!(!verdict.evidence.is_null(), "{verdict:?}");
    assert!(!events.iter().any(|e| e.kind == "StageAdvanced"));
    assert_eq!(stable_version(&h).await, "v1");

    // Failed stays failed at 0%, whatever the canary does next.
    h.metrics.serve(Serving::HEALTHY);
    h.run_for(60 * SECOND).await;
    assert_eq!(h.rollout(&r.id).await.phase, "Failed");
    assert_eq!(h.router.weights(), [0, 20, 0]);
}

/// Manual stages before the promoting one, so that the rollout waits for the
/// race and a stage promote does not end it.
const MANUAL: &str = "\
app: shop
version: v2
stages:
  - traffic: 20
  - traffic: 50
  - traffic: 100
    final: true
    promote: true
";

#[tokio::test(start_paused = true)]
async fn an_answered_abort_is_never_followed_by_a_promotion() {
    let mut h = InProcess::start().await;
    let mut aborts_won = 0;
    for round in 0..6 {
        let r = h.create(MANUAL).await;
        let abort = Command::Abort {
            reason: Some("race".into()),
        };
        // A full promote (three rounds) or a stage promote, polled before or after
        // the abort: both read the same revision.
        let promote = Command::Promote { full: round < 3 };
        let (aborted, promoted) = if round % 2 == 0 {
            let (p, a) = tokio::join!(h.command(&r.id, promote), h.command(&r.id, abort));
            (a, p)
        } else {
            tokio::join!(h.command(&r.id, abort), h.command(&r.id, promote))
        };
        h.run_for(2 * SECOND).await;
        let end = h.rollout(&r.id).await;
        match aborted {
            Ok(_) => {
                aborts_won += 1;
                assert_eq!(end.phase, "Aborted", "round {round}: {promoted:?}");
                assert_eq!(stable_version(&h).await, "v1", "round {round}");
                let route = h.router.last().unwrap();
                assert_eq!(route_weight(&route), 0, "round {round}");
                assert_eq!(route.stable.version, "v1", "round {round}");
            }
            Err(e) => {
                // Only a full promote that committed first can refuse the abort.
                assert!(
                    round < 3,
                    "round {round}: a stage promote refused the abort"
                );
                assert_eq!(e.status(), 409, "round {round}: {e:?}");
                assert!(promoted.is_ok(), "round {round}: neither was taken");
                assert_eq!(end.phase, "Succeeded", "round {round}");
                // Roll the app back for the next round.
                let mut app = h.shared.config.apps[0].clone();
                app.stable.version = "v1".into();
                h.shared
                    .store
                    .put_app(APP, &serde_json::to_value(&app).unwrap())
                    .await
                    .unwrap();
                h.tick().await;
            }
        }
    }
    assert!(
        aborts_won >= 3,
        "abort committed first in {aborts_won} of 6"
    );
}

#[tokio::test(start_paused = true)]
async fn a_router_out_of_sync_stops_the_stage_clock_until_it_is_back() {
    let mut h = InProcess::start().await;
    let r = h.create(&failing_after(50)).await;
    h.run_for(10 * SECOND).await;

    // The router dies: noticed by the periodic check, with no weight change due.
    h.router.fail("connection refused");
    h.run_for(3 * SECOND).await;
    let app = h.shared.apps.get(APP).await.unwrap();
    assert!(!app.route_sync().in_sync);
    let held = h.rollout(&r.id).await;
    let s = summary(&held.state).unwrap();
    assert!(!s.stage_clock_running, "{}", held.state);
    assert_eq!(
        h.kinds(&r.id)
            .await
            .iter()
            .filter(|k| *k == "RouteUnapplied")
            .count(),
        1
    );

    // Held far longer than the stage lasts: no advance, no failure.
    h.run_for(25 * SECOND).await;
    let held = h.rollout(&r.id).await;
    assert_eq!((held.phase.as_str(), stage(&held)), ("Progressing", 0));

    // Back: re-applied at once, and the stage runs the 20 s it had left.
    h.router.recover();
    h.run_for(2 * SECOND).await;
    assert!(app.route_sync().in_sync);
    assert!(h.kinds(&r.id).await.contains(&"RouteApplied".to_owned()));
    h.run_for(12 * SECOND).await;
    assert_eq!(stage(&h.rollout(&r.id).await), 0, "the time away counted");
    h.run_until(&r.id, 10 * SECOND, |r| stage(r) == 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_router_out_of_sync_for_too_many_reads_fails_the_rollout() {
    let mut h = InProcess::start().await;
    let r = h.create(&failing_after(3)).await;
    h.run_for(5 * SECOND).await;
    h.router.fail("connection refused");
    let failed = h
        .run_until(&r.id, 10 * SECOND, |r| r.phase == "Failed")
        .await;
    assert_eq!(stage(&failed), 0);
    let events = h.events(&r.id).await;
    let verdict = events.iter().find(|e| e.kind == "Failed").unwrap();
    assert!(verdict.message.contains("3 reads in a row"), "{verdict:?}");
    // The 0% the router could not take is applied once it is back.
    assert_eq!(h.router.weights().last(), Some(&20));
    h.router.recover();
    h.run_for(SECOND).await;
    assert_eq!(h.router.weights().last(), Some(&0));
}

#[tokio::test(start_paused = true)]
async fn a_store_refusing_writes_holds_the_rollout_where_it_was_persisted() {
    let mut h = InProcess::start().await;
    let r = h.create(TWO_STAGES).await;
    h.run_until(&r.id, 35 * SECOND, |r| stage(r) == 1).await;

    h.store.refuse(true);
    h.run_for(2 * SECOND).await;
    let problem = h.shared.store_health.problem().expect("reported");
    assert!(problem.contains("readonly"), "{problem}");
    // An operator's command is refused as unavailable, not taken.
    let e = h
        .command(&r.id, Command::Abort { reason: None })
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (503, "unavailable"), "{e:?}");
    // For longer than the stage and the rest of the rollout last, traffic and the
    // rollout stay as persisted.
    h.run_for(90 * SECOND).await;
    let held = h.rollout(&r.id).await;
    assert_eq!((held.phase.as_str(), stage(&held)), ("Progressing", 1));
    assert_eq!(h.router.weights(), [0, 20, 50]);
    assert!(!h.shared.leader.is_leader(), "no lease without writes");

    // Writes again: the rollout goes on from where it was, to the end.
    h.store.refuse(false);
    h.run_until(&r.id, 40 * SECOND, |r| r.phase == "Succeeded")
        .await;
    assert_eq!(h.shared.store_health.problem(), None);
    assert_eq!(stable_version(&h).await, "v2");
}

#[tokio::test(start_paused = true)]
async fn paused_time_does_not_count_towards_the_stage() {
    let mut h = InProcess::start().await;
    let spec = "app: shop\nversion: v2\nstages:\n  - traffic: 10\n  - traffic: 30\n    duration: 2s\n  - traffic: 60\n  - traffic: 100\n    final: true\n    promote: true\n";
    let r = h.create(spec).await;
    let promoted = h
        .command(&r.id, Command::Promote { full: false })
        .await
        .unwrap();
    assert_eq!(stage(&promoted), 1);
    let paused = h.command(&r.id, Command::Pause).await.unwrap();
    assert_eq!(paused.phase, "Paused");

    h.run_for(Duration::from_millis(2500)).await;
    let r1 = h.rollout(&r.id).await;
    assert_eq!((r1.phase.as_str(), stage(&r1)), ("Paused", 1));
    let resumed = h.command(&r.id, Command::Resume).await.unwrap();
    assert_eq!(resumed.phase, "Progressing");
    h.run_for(SECOND).await;
    assert_eq!(stage(&h.rollout(&r.id).await), 1, "the pause counted");
    let r2 = h.run_until(&r.id, SECOND, |r| stage(r) == 2).await;
    assert_eq!(summary(&r2.state).unwrap().canary_weight, 60);
    assert_eq!(h.router.weights(), [0, 10, 30, 60]);
}

#[tokio::test(start_paused = true)]
async fn a_rollout_whose_version_became_stable_cannot_be_retried() {
    let h = InProcess::start().await;
    let first = h.create(MANUAL).await;
    h.command(&first.id, Command::Abort { reason: None })
        .await
        .unwrap();
    let actions = || async {
        let stables = crate::view::Stables::read(&h.shared).await;
        let record = h.rollout(&first.id).await;
        crate::view::rollout(
            &record,
            None,
            Role::Operator,
            h.shared.clock.now(),
            &stables,
        )
        .allowed_actions
    };
    assert_eq!(actions().await, [Action::Retry]);
    // Another rollout of the same version promotes it.
    let second = h.create(MANUAL).await;
    let done = h
        .command(&second.id, Command::Promote { full: true })
        .await
        .unwrap();
    assert_eq!(done.phase, "Succeeded");
    assert_eq!(stable_version(&h).await, "v2");

    let err = h.command(&first.id, Command::Retry).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (409, "already_stable"),
        "{err:?}"
    );
    assert_eq!(h.rollout(&first.id).await.phase, "Aborted");
    // Nor is retry offered.
    assert_eq!(actions().await, []);
}
