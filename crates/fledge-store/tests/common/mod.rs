//! The store contract: one suite of checks that every backend must pass. Each check
//! takes a [`Harness`] that can open (and reopen) one fresh database.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fledge_stats::ArmHealth;
use fledge_store::{
    AppRecord, AppUpdate, Fence, GroupRecord, GroupUpdate, Lease, NewEvent, NewGroup, NewRollout,
    RolloutFilter, RolloutRecord, RolloutUpdate, Sample, SampleBounds, StateUpdate, Store,
    StoreError, Timestamp,
};
use serde_json::{Value, json};

/// One fresh database under test.
pub trait Harness: Send + Sync {
    /// The database's URL, as [`fledge_store::connect`] takes it.
    fn url(&self) -> String;

    /// Runs `sql` on the database directly, behind the store's back.
    fn execute(&self, sql: &'static str) -> impl Future<Output = ()> + Send;

    /// A new store on the harness's database; every call opens the same database
    /// again, as a restarted server would.
    fn open(&self) -> impl Future<Output = Arc<dyn Store>> + Send {
        async {
            fledge_store::connect(&self.url())
                .await
                .unwrap_or_else(|e| panic!("opening the {} store: {e}", self.url()))
        }
    }
}

/// Generates one `#[tokio::test]` per contract check for a backend. `$harness` is an
/// async fn returning a `Harness`; extra attributes (such as `#[ignore]`) follow.
#[macro_export]
macro_rules! contract_tests {
    ($harness:path $(, #[$attr:meta])*) => {
        $crate::contract_test!(
            $harness,
            [$(#[$attr])*],
            migrations_are_idempotent_and_data_survives_reopen,
            apps_crud,
            rollout_crud_and_listing,
            events_are_numbered_per_rollout_without_gaps,
            recent_events_follow_global_order,
            racing_writers_on_one_rollout_cannot_both_win,
            concurrent_read_modify_write_loses_no_update,
            racing_creators_cannot_both_start_a_rollout,
            active_rollout_rule_holds_on_retry,
            app_update_is_atomic_with_the_rollout_update,
            leases_hand_over_with_growing_epochs,
            expired_lease_can_be_taken_over,
            stale_fence_is_refused,
            bad_input_is_refused_with_a_clear_error,
            servers_starting_together_migrate_once,
            a_live_stream_never_skips_an_event,
            batched_state_updates_are_checked_one_by_one,
            a_stale_fence_refuses_a_whole_batch,
            a_schema_from_a_newer_fledge_is_refused,
            chart_samples_survive_a_reopen_and_stay_bounded,
            chart_samples_of_old_rollouts_are_pruned,
            chart_sample_counts_outside_the_columns_are_clamped,
            groups_crud_and_listing,
            group_updates_are_revision_checked,
            stale_fence_refuses_group_writes,
            rollouts_belong_to_their_group,
            a_schema_2_database_migrates_forward,
        );
    };
}

/// Contract checks as tests, each with the attributes in brackets; see
/// [`contract_tests!`].
#[macro_export]
macro_rules! contract_test {
    (@one $harness:path, [$(#[$attr:meta])*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $name() {
            let harness = $harness().await;
            common::$name(&harness).await;
        }
    };
    ($harness:path, $attrs:tt, $($name:ident),+ $(,)?) => {
        $($crate::contract_test!(@one $harness, $attrs, $name);)+
    };
}

// === helpers ===

fn new_rollout(app: &str, version: &str) -> NewRollout {
    NewRollout {
        app: app.into(),
        version: version.into(),
        phase: "Pending".into(),
        spec_text: format!("app: {app}\nversion: {version}\n"),
        spec: json!({"app": app, "version": version, "stages": [{"weight": 10}, {"weight": 50}]}),
        state: json!({"stage": null}),
        events: vec![NewEvent::new("Created", "alice", "rollout created")],
        group: None,
        fence: None,
    }
}

fn update(id: &str, revision: i64, phase: &str, state: Value) -> RolloutUpdate {
    RolloutUpdate {
        id: id.into(),
        expected_revision: revision,
        phase: phase.into(),
        state,
        events: vec![],
        app_update: None,
        fence: None,
    }
}

/// Registers `app` with `version` as its stable version, which must succeed.
async fn put_stable(store: &Arc<dyn Store>, app: &str, version: &str) -> AppRecord {
    let config = json!({"stable": {"version": version}});
    store.put_app(app, &config).await.unwrap()
}

/// Creates a rollout of `app` at `version`, which must succeed.
async fn create(store: &Arc<dyn Store>, app: &str, version: &str) -> RolloutRecord {
    store
        .create_rollout(new_rollout(app, version))
        .await
        .unwrap()
}

/// Moves a rollout on from `revision` to `phase` and `state`, which must succeed.
async fn advance(
    store: &Arc<dyn Store>,
    id: &str,
    revision: i64,
    phase: &str,
    state: Value,
) -> RolloutRecord {
    store
        .update_rollout(update(id, revision, phase, state))
        .await
        .unwrap()
}

/// Every rollout in `store`, newest first.
async fn all_rollouts(store: &Arc<dyn Store>) -> Vec<RolloutRecord> {
    store
        .list_rollouts(&RolloutFilter::default())
        .await
        .unwrap()
}

/// Tries to take lease `name` for `holder` for 30 s.
async fn lease(store: &Arc<dyn Store>, name: &str, holder: &str) -> Option<Lease> {
    store
        .try_acquire_lease(name, holder, Duration::from_secs(30))
        .await
        .unwrap()
}

/// node-a's `controller` lease `a` passes to node-b, as when node-a stalls: `a` is
/// released and node-b's lease returned.
async fn hand_over(store: &Arc<dyn Store>, a: &Lease) -> Lease {
    assert!(store.release_lease(a).await.unwrap());
    lease(store, "controller", "node-b").await.unwrap()
}

/// A write request that a lease can fence.
trait Fenced {
    /// The request, refused with [`StoreError::Fenced`] unless `lease` still has its
    /// epoch.
    fn fenced(self, lease: &Lease) -> Self;
}

macro_rules! impl_fenced {
    ($($request:ty),*) => {$(
        impl Fenced for $request {
            fn fenced(mut self, lease: &Lease) -> Self {
                self.fence = Some(lease.fence());
                self
            }
        }
    )*};
}
impl_fenced!(NewRollout, RolloutUpdate, NewGroup, GroupUpdate);

/// Polls `f` until it returns `Some`, or panics after `deadline`.
async fn poll_until<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === the contract ===

pub async fn migrations_are_idempotent_and_data_survives_reopen(h: &impl Harness) {
    let store = h.open().await;
    put_stable(&store, "checkout", "v1").await;
    let created = create(&store, "checkout", "v2").await;
    let mut u = update(&created.id, 1, "Progressing", json!({"stage": 0}));
    u.events = vec![
        NewEvent::new("StageStarted", "engine", "stage 0").with_evidence(json!({"weight": 10})),
    ];
    let updated = store.update_rollout(u).await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
    assert!(
        store.ping().await.unwrap_err().is_unavailable(),
        "closed means unavailable"
    );
    drop(store);

    // Reopening runs the migrations again; they must find nothing to do, and
    // everything committed must be there unchanged.
    for _ in 0..2 {
        let store = h.open().await;
        assert_eq!(
            store.get_rollout(&created.id).await.unwrap(),
            Some(updated.clone())
        );
        let app = store.get_app("checkout").await.unwrap().unwrap();
        assert_eq!(app.config, json!({"stable": {"version": "v1"}}));
        let events = store.events(&created.id, 0).await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].evidence, json!({"weight": 10}));
        store.close().await;
    }
}

pub async fn apps_crud(h: &impl Harness) {
    let store = h.open().await;
    assert_eq!(store.get_app("web").await.unwrap(), None);
    let a = put_stable(&store, "web", "v1").await;
    assert_eq!(a.name, "web");
    assert_eq!(a.created_at, a.updated_at);
    store.put_app("api", &json!({})).await.unwrap();
    let b = put_stable(&store, "web", "v2").await;
    assert_eq!(
        b.created_at, a.created_at,
        "replacing keeps the creation time"
    );
    assert_eq!(b.config, json!({"stable": {"version": "v2"}}));
    let names: Vec<_> = store
        .list_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["api", "web"]);
    assert!(store.delete_app("api").await.unwrap());
    assert!(!store.delete_app("api").await.unwrap());
    assert_eq!(store.list_apps().await.unwrap().len(), 1);
}

pub async fn rollout_crud_and_listing(h: &impl Harness) {
    let store = h.open().await;
    let new = new_rollout("web", "v2");
    let r = store.create_rollout(new.clone()).await.unwrap();
    assert!(r.id.starts_with("ro-") && r.id.len() == 15, "{}", r.id);
    assert_eq!(
        (r.app.as_str(), r.version.as_str(), r.phase.as_str()),
        ("web", "v2", "Pending")
    );
    assert_eq!(r.spec_text, new.spec_text);
    assert_eq!(r.spec, new.spec);
    assert_eq!(r.state, new.state);
    assert_eq!(r.revision, 1);
    assert_eq!(r.finished_at, None);
    assert_eq!(store.get_rollout(&r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(store.get_rollout("ro-nope").await.unwrap(), None);

    let r = advance(
        &store,
        &r.id,
        1,
        "Progressing",
        json!({"stage": 0, "weight": 10}),
    )
    .await;
    assert_eq!(r.revision, 2);
    assert_eq!(r.state, json!({"stage": 0, "weight": 10}));
    assert!(r.updated_at >= r.created_at);
    let done = advance(&store, &r.id, 2, "Succeeded", json!({"done": true})).await;
    assert!(done.finished_at.is_some());

    let api1 = create(&store, "api", "v7").await;
    let api1 = advance(&store, &api1.id, 1, "Failed", json!({})).await;
    let api2 = create(&store, "api", "v8").await;

    let list = async |filter: RolloutFilter| store.list_rollouts(&filter).await.unwrap();
    let all = all_rollouts(&store).await;
    let ids: Vec<_> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [&api2.id, &api1.id, &done.id], "newest first");
    let of_app = RolloutFilter {
        app: Some("api".into()),
        ..Default::default()
    };
    assert_eq!(list(of_app).await.len(), 2);
    let failed = RolloutFilter {
        phase: Some("Failed".into()),
        ..Default::default()
    };
    assert_eq!(list(failed).await, std::slice::from_ref(&api1));
    let newest = RolloutFilter {
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(list(newest).await, std::slice::from_ref(&api2));
    let active = store.active_rollouts().await.unwrap();
    assert_eq!(active, std::slice::from_ref(&api2));
    let mut counts = store.count_rollouts_by_phase().await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("Failed".to_owned(), 1),
            ("Pending".to_owned(), 1),
            ("Succeeded".to_owned(), 1)
        ]
    );
    assert_eq!(
        store.latest_rollout_for_app("api").await.unwrap(),
        Some(api2)
    );
    assert_eq!(
        store.latest_rollout_for_app("web").await.unwrap(),
        Some(done)
    );
    assert_eq!(store.latest_rollout_for_app("none").await.unwrap(), None);
}

pub async fn events_are_numbered_per_rollout_without_gaps(h: &impl Harness) {
    let store = h.open().await;
    let mut new = new_rollout("web", "v2");
    new.events
        .push(NewEvent::new("Queued", "engine", "waiting"));
    let r = store.create_rollout(new).await.unwrap();
    let mut u = update(&r.id, 1, "Progressing", json!({}));
    u.events = (0..3)
        .map(|i| {
            NewEvent::new("AnalysisPassed", "engine", format!("check {i}")).with_evidence(
                json!({"errorRate": {"canary": 0.001, "stable": 0.002, "samples": 1000 + i}}),
            )
        })
        .collect();
    store.update_rollout(u).await.unwrap();
    advance(&store, &r.id, 2, "Paused", json!({})).await;

    let events = store.events(&r.id, 0).await.unwrap();
    let seqs: Vec<_> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(events[0].kind, "Created");
    assert_eq!(events[0].actor, "alice");
    assert_eq!(events[0].evidence, Value::Null);
    assert_eq!(events[4].message, "check 2");
    assert_eq!(events[4].evidence["errorRate"]["samples"], json!(1002));
    assert!(
        events
            .iter()
            .all(|e| e.app == "web" && e.rollout_id == r.id)
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));

    let tail = store.events(&r.id, 3).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    assert!(store.events("ro-unknown", 0).await.unwrap().is_empty());

    // An explicit time is kept.
    let mut u = update(&r.id, 3, "Paused", json!({}));
    u.events = vec![NewEvent::new("Note", "bob", "x").at(fledge_store::Timestamp(1_000))];
    store.update_rollout(u).await.unwrap();
    let last = store.events(&r.id, 5).await.unwrap();
    assert_eq!(last[0].at, fledge_store::Timestamp(1_000));
    assert_eq!(last[0].seq, 6);
}

pub async fn recent_events_follow_global_order(h: &impl Harness) {
    let store = h.open().await;
    let a = create(&store, "a", "v1").await;
    let b = create(&store, "b", "v1").await;
    let mut u = update(&a.id, 1, "Progressing", json!({}));
    u.events = vec![NewEvent::new("StageStarted", "engine", "a0")];
    store.update_rollout(u).await.unwrap();

    let all = store.recent_events(0, 100).await.unwrap();
    let order: Vec<_> = all.iter().map(|e| (e.app.as_str(), e.seq)).collect();
    assert_eq!(order, [("a", 1), ("b", 1), ("a", 2)]);
    assert_eq!(all[1].rollout_id, b.id);
    let after = store.recent_events(all[0].id, 1).await.unwrap();
    assert_eq!(after, [all[1].clone()]);
    assert!(
        store
            .recent_events(all[2].id, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn racing_writers_on_one_rollout_cannot_both_win(h: &impl Harness) {
    let store = h.open().await;
    let r = create(&store, "web", "v2").await;
    // Every writer read revision 1 and wants to move the rollout its own way: exactly
    // one may succeed, whatever the interleaving.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let id = r.id.clone();
            tokio::spawn(async move {
                let phase = if i % 2 == 0 { "Progressing" } else { "Aborted" };
                let mut u = update(&id, 1, phase, json!({"writer": i}));
                u.events = vec![NewEvent::new("Decided", format!("writer-{i}"), phase)];
                store.update_rollout(u).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(rec) => winners.push((i, rec)),
            Err(StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }) => {}
            Err(e) => panic!("writer {i}: unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    let (i, rec) = &winners[0];
    assert_eq!(rec.revision, 2);
    assert_eq!(rec.state, json!({"writer": i}));
    let events = store.events(&r.id, 0).await.unwrap();
    assert_eq!(events.len(), 2, "only the winner's event is written");
    assert_eq!(events[1].actor, format!("writer-{i}"));
}

pub async fn batched_state_updates_are_checked_one_by_one(h: &impl Harness) {
    let store = h.open().await;
    assert!(store.update_states(&[], None).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for app in ["a", "b", "c"] {
        ids.push(create(&store, app, "v2").await.id);
    }
    let active = store.active_rollout_for_app("b").await.unwrap().unwrap();
    assert_eq!(active.id, ids[1]);
    assert!(store.active_rollout_for_app("zzz").await.unwrap().is_none());
    // An operator moves `b` on before the batch lands: its slot conflicts, the others
    // are written.
    advance(&store, &ids[1], 1, "Paused", json!({"by": "operator"})).await;
    let batch: Vec<StateUpdate> = ids
        .iter()
        .chain(std::iter::once(&"r-missing".to_owned()))
        .map(|id| StateUpdate {
            id: id.clone(),
            expected_revision: 1,
            state: json!({"evidence": id}),
        })
        .collect();
    let results = store.update_states(&batch, None).await.unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap(), &2);
    assert!(matches!(
        &results[1],
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    assert_eq!(results[2].as_ref().unwrap(), &2);
    assert!(matches!(&results[3], Err(StoreError::NotFound { .. })));
    for (i, id) in ids.iter().enumerate() {
        let r = store.get_rollout(id).await.unwrap().unwrap();
        assert_eq!(r.revision, 2);
        if i == 1 {
            assert_eq!(
                (r.phase.as_str(), &r.state),
                ("Paused", &json!({"by": "operator"}))
            );
        } else {
            assert_eq!(
                (r.phase.as_str(), &r.state),
                ("Pending", &json!({"evidence": id}))
            );
        }
        assert_eq!(
            store.events(id, 0).await.unwrap().len(),
            1,
            "no event added"
        );
    }
    // An active-phase lookup never returns a finished rollout.
    advance(&store, &ids[0], 2, "Aborted", json!({})).await;
    assert!(store.active_rollout_for_app("a").await.unwrap().is_none());
}

pub async fn a_stale_fence_refuses_a_whole_batch(h: &impl Harness) {
    let store = h.open().await;
    let a = lease(&store, "controller", "node-a").await.unwrap();
    let r = create(&store, "web", "v2").await;
    let one = [StateUpdate {
        id: r.id.clone(),
        expected_revision: 1,
        state: json!({"by": "a"}),
    }];
    assert_eq!(
        store.update_states(&one, Some(&a.fence())).await.unwrap()[0]
            .as_ref()
            .unwrap(),
        &2
    );
    assert!(store.release_lease(&a).await.unwrap());
    lease(&store, "controller", "node-b").await.unwrap();
    let late = [StateUpdate {
        id: r.id.clone(),
        expected_revision: 2,
        state: json!({"by": "late a"}),
    }];
    assert!(matches!(
        store
            .update_states(&late, Some(&a.fence()))
            .await
            .unwrap_err(),
        StoreError::Fenced { .. }
    ));
    let unchanged = store.get_rollout(&r.id).await.unwrap().unwrap();
    assert_eq!(
        (unchanged.revision, &unchanged.state),
        (2, &json!({"by": "a"}))
    );
}

pub async fn concurrent_read_modify_write_loses_no_update(h: &impl Harness) {
    let store = h.open().await;
    let r = create(&store, "web", "v2").await;
    let writers = 8;
    let per_writer = 10;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let id = r.id.clone();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for k in 0..per_writer {
                    loop {
                        let cur = store.get_rollout(&id).await.unwrap().unwrap();
                        let count = cur.state["count"].as_i64().unwrap_or(0);
                        let mut u = update(
                            &id,
                            cur.revision,
                            "Progressing",
                            json!({"count": count + 1}),
                        );
                        u.events = vec![NewEvent::new("Tick", format!("w{w}"), format!("{k}"))];
                        match store.update_rollout(u).await {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let total = writers * per_writer;
    let r = store.get_rollout(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state["count"], json!(total), "no increment lost");
    assert_eq!(r.revision, 1 + total);
    let seqs: Vec<_> = store
        .events(&r.id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=1 + total).collect::<Vec<_>>());
}

pub async fn racing_creators_cannot_both_start_a_rollout(h: &impl Harness) {
    let store = h.open().await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_rollout(new_rollout("web", &format!("v{i}")))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(rec) => winners.push(rec),
            Err(StoreError::ActiveRolloutExists { app, id }) => {
                assert_eq!(app, "web");
                refused.push(id);
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins");
    assert!(
        refused.iter().all(|id| *id == winners[0].id),
        "the refusal names the winner"
    );
    assert_eq!(all_rollouts(&store).await.len(), 1);

    // Once it ends, a new one may start; other apps were never blocked.
    create(&store, "api", "v1").await;
    advance(&store, &winners[0].id, 1, "Succeeded", json!({})).await;
    create(&store, "web", "v99").await;
    // A rollout created in a finished phase (an import) does not count as active.
    let mut old = new_rollout("web", "v0");
    old.phase = "Aborted".into();
    let old = store.create_rollout(old).await.unwrap();
    assert!(old.finished_at.is_some());
}

pub async fn active_rollout_rule_holds_on_retry(h: &impl Harness) {
    let store = h.open().await;
    let first = create(&store, "web", "v2").await;
    let first = advance(&store, &first.id, 1, "Failed", json!({})).await;
    let second = create(&store, "web", "v3").await;
    // Retrying the failed one would make two active rollouts.
    let err = store
        .update_rollout(update(&first.id, first.revision, "Progressing", json!({})))
        .await
        .unwrap_err();
    match err {
        StoreError::ActiveRolloutExists { app, id } => {
            assert_eq!(app, "web");
            assert_eq!(id, second.id);
        }
        e => panic!("unexpected {e}"),
    }
    advance(&store, &second.id, 1, "Aborted", json!({})).await;
    let retried = advance(&store, &first.id, first.revision, "Progressing", json!({})).await;
    assert_eq!(retried.finished_at, None, "active again");
}

pub async fn app_update_is_atomic_with_the_rollout_update(h: &impl Harness) {
    let store = h.open().await;
    put_stable(&store, "web", "v1").await;
    let r = create(&store, "web", "v2").await;
    let promote = |revision| {
        let mut u = update(&r.id, revision, "Succeeded", json!({"weight": 100}));
        u.events = vec![NewEvent::new("Succeeded", "engine", "v2 is stable")];
        u.app_update = Some(AppUpdate {
            name: "web".into(),
            config: json!({"stable": {"version": "v2"}}),
        });
        u
    };
    // A stale write changes neither the rollout nor the app.
    let err = store.update_rollout(promote(7)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: 1, .. }),
        "{err}"
    );
    assert_eq!(
        store.get_app("web").await.unwrap().unwrap().config,
        json!({"stable": {"version": "v1"}})
    );
    assert_eq!(store.events(&r.id, 0).await.unwrap().len(), 1);

    let done = store.update_rollout(promote(1)).await.unwrap();
    assert_eq!(done.phase, "Succeeded");
    assert_eq!(
        store.get_app("web").await.unwrap().unwrap().config,
        json!({"stable": {"version": "v2"}})
    );
}

pub async fn leases_hand_over_with_growing_epochs(h: &impl Harness) {
    let store = h.open().await;
    let ttl = Duration::from_secs(30);
    let a = lease(&store, "controller", "node-a").await.unwrap();
    assert_eq!(a.epoch, 1);
    assert_eq!(lease(&store, "controller", "node-b").await, None);
    // Re-acquiring while holding keeps the term.
    let again = lease(&store, "controller", "node-a").await.unwrap();
    assert_eq!(again.epoch, 1);
    let renewed = store.renew_lease(&a, ttl).await.unwrap().unwrap();
    assert_eq!(renewed.epoch, 1);
    assert!(renewed.expires_at >= a.expires_at);
    // Leases are independent by name.
    let other = lease(&store, "janitor", "node-b").await.unwrap();
    assert_eq!(other.epoch, 1);

    assert!(store.release_lease(&a).await.unwrap());
    assert!(
        !store.release_lease(&a).await.unwrap(),
        "second release is a no-op"
    );
    assert_eq!(
        store.renew_lease(&a, ttl).await.unwrap(),
        None,
        "released means lost"
    );
    let b = lease(&store, "controller", "node-b").await.unwrap();
    assert_eq!(b.epoch, 2);
    assert_eq!(lease(&store, "controller", "node-a").await, None);
    assert_eq!(store.renew_lease(&a, ttl).await.unwrap(), None);

    // Racing acquirers of a free lease: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(
                async move { store.try_acquire_lease("race", &format!("n{i}"), ttl).await },
            )
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

pub async fn expired_lease_can_be_taken_over(h: &impl Harness) {
    let store = h.open().await;
    let a = store
        .try_acquire_lease("controller", "node-a", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    let b = poll_until(Duration::from_secs(10), "the lease to expire", || {
        let store = store.clone();
        async move {
            store
                .try_acquire_lease("controller", "node-b", Duration::from_secs(30))
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(b.epoch, a.epoch + 1);
    assert_eq!(
        store
            .renew_lease(&a, Duration::from_secs(30))
            .await
            .unwrap(),
        None
    );
    assert!(!store.release_lease(&a).await.unwrap());
    assert!(
        store
            .renew_lease(&b, Duration::from_secs(30))
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn stale_fence_is_refused(h: &impl Harness) {
    let store = h.open().await;
    let a = lease(&store, "controller", "node-a").await.unwrap();
    let new = new_rollout("web", "v2").fenced(&a);
    let r = store.create_rollout(new).await.unwrap();
    let u = update(&r.id, 1, "Progressing", json!({"by": "a"})).fenced(&a);
    let r = store.update_rollout(u).await.unwrap();

    // node-a stalls, its lease passes to node-b.
    let b = hand_over(&store, &a).await;

    let mut stale = update(&r.id, r.revision, "Aborted", json!({"by": "a"})).fenced(&a);
    stale.events = vec![NewEvent::new("Aborted", "engine", "late write")];
    match store.update_rollout(stale).await.unwrap_err() {
        StoreError::Fenced {
            lease,
            epoch,
            current,
        } => {
            assert_eq!((lease.as_str(), epoch, current), ("controller", 1, Some(2)));
        }
        e => panic!("unexpected {e}"),
    }
    let stale_create = new_rollout("api", "v1").fenced(&a);
    assert!(matches!(
        store.create_rollout(stale_create).await.unwrap_err(),
        StoreError::Fenced { .. }
    ));
    let unchanged = store.get_rollout(&r.id).await.unwrap().unwrap();
    assert_eq!(unchanged, r, "the fenced write changed nothing");
    assert_eq!(store.events(&r.id, 0).await.unwrap().len(), 1);

    let fresh = update(&r.id, r.revision, "Paused", json!({"by": "b"})).fenced(&b);
    store.update_rollout(fresh).await.unwrap();

    // A fence on a lease that never existed, or that was released, is refused too.
    let mut bogus = update(&r.id, r.revision + 1, "Paused", json!({}));
    bogus.fence = Some(Fence {
        lease: "nobody".into(),
        epoch: 1,
    });
    assert!(matches!(
        store.update_rollout(bogus).await.unwrap_err(),
        StoreError::Fenced { current: None, .. }
    ));
    store.release_lease(&b).await.unwrap();
    let released = update(&r.id, r.revision + 1, "Paused", json!({})).fenced(&b);
    assert!(matches!(
        store.update_rollout(released).await.unwrap_err(),
        StoreError::Fenced { current: None, .. }
    ));
}

pub async fn bad_input_is_refused_with_a_clear_error(h: &impl Harness) {
    let store = h.open().await;
    let mut bad = new_rollout("web", "v2");
    bad.phase = "progressing".into();
    let err = store.create_rollout(bad).await.unwrap_err();
    assert!(err.to_string().contains("`progressing`"), "{err}");
    let mut bad = new_rollout("", "v2");
    bad.phase = "Pending".into();
    assert!(matches!(
        store.create_rollout(bad).await.unwrap_err(),
        StoreError::Invalid {
            field: "app name",
            ..
        }
    ));
    let err = store
        .update_rollout(update("ro-missing", 1, "Paused", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { id } if id == "ro-missing"),
        "{err}"
    );
    assert!(matches!(
        store
            .try_acquire_lease("x", "y", Duration::ZERO)
            .await
            .unwrap_err(),
        StoreError::Invalid { .. }
    ));
    let mut no_actor = new_rollout("web", "v2");
    no_actor.events = vec![NewEvent::new("Created", "", "who?")];
    assert!(store.create_rollout(no_actor).await.is_err());
    assert!(
        all_rollouts(&store).await.is_empty(),
        "nothing half-written"
    );
}

pub async fn servers_starting_together_migrate_once(h: &impl Harness) {
    // Several servers start at once on a fresh database: each must come up, and the
    // schema must be created exactly once.
    let opened = futures::future::join_all((0..4).map(|_| h.open())).await;
    opened[0].put_app("web", &json!({})).await.unwrap();
    for store in &opened {
        assert_eq!(store.list_apps().await.unwrap().len(), 1);
        store.close().await;
    }
}

pub async fn a_live_stream_never_skips_an_event(h: &impl Harness) {
    // Writers on different rollouts commit concurrently while a reader follows
    // `recent_events` the way a live stream does; it must see every event exactly
    // once and in id order, even when a transaction that drew a smaller id commits
    // after one with a larger id would have.
    let store = h.open().await;
    let writers = 6;
    let per_writer = 15;
    let mut ids = Vec::new();
    for w in 0..writers {
        ids.push(create(&store, &format!("app-{w}"), "v2").await.id);
    }
    let start_after = store
        .recent_events(0, 1000)
        .await
        .unwrap()
        .last()
        .map_or(0, |e| e.id);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = start_after;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let batch = store.recent_events(last, 7).await.unwrap();
                for e in &batch {
                    assert!(e.id > last, "ids go backwards: {} after {last}", e.id);
                    last = e.id;
                    seen.push(e.id);
                }
                if batch.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for k in 0..per_writer {
                    let mut u = update(&id, 1 + k, "Progressing", json!({"k": k}));
                    u.events = vec![
                        NewEvent::new("Tick", "engine", format!("{k}a")),
                        NewEvent::new("Tick", "engine", format!("{k}b")),
                    ];
                    store.update_rollout(u).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let all: Vec<_> = store
        .recent_events(start_after, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all.len() as i64, writers * per_writer * 2);
    assert_eq!(seen, all, "the live reader saw every event once, in order");
}

pub async fn a_schema_from_a_newer_fledge_is_refused(h: &impl Harness) {
    h.open().await.close().await;
    h.execute("INSERT INTO fledge_migrations (version, name, applied_at) VALUES (99, 'future', 0)")
        .await;
    let err = fledge_store::connect(&h.url()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 3
            }
        ),
        "{err:?}"
    );
}

/// A chart sample of `rollout` at `at` with the canary's error rate `err`.
fn sample(rollout: &str, at: i64, weight: i64, err: f64) -> Sample {
    let arm = |version: &str, err: Option<f64>| ArmHealth {
        version: version.into(),
        request_rate: 12.5,
        error_rate: err,
        p50_ms: Some(3.0),
        p95_ms: Some(9.5),
        p99_ms: None,
        requests: 125,
        errors: 2,
        total_requests: 4_000,
    };
    Sample {
        rollout_id: rollout.into(),
        at: Timestamp(at),
        snapshots: 1,
        phase: Some("Progressing".into()),
        canary_weight: weight,
        stable: Some(arm("v1", None)),
        canary: Some(arm("v2", Some(err))),
    }
}

pub async fn chart_samples_survive_a_reopen_and_stay_bounded(h: &impl Harness) {
    let store = h.open().await;
    let a = create(&store, "shop", "v2").await;
    let b = create(&store, "cart", "v2").await;
    let bounds = SampleBounds {
        max_per_rollout: 30,
        full_resolution: 10,
    };
    // One write per snapshot with both rollouts' samples; the same write again
    // (a second replica, a retried request) changes nothing.
    let mut first = None;
    for i in 0..200 {
        let err = if i == 17 { 0.75 } else { 0.01 };
        let batch = [
            sample(&a.id, i * 2_000, 20, err),
            sample(&b.id, i * 2_000, 50, 0.0),
        ];
        store.append_samples(&batch, bounds).await.unwrap();
        store.append_samples(&batch, bounds).await.unwrap();
        if i == 0 {
            first = Some(store.samples(&a.id, Timestamp(0)).await.unwrap());
        }
    }
    assert_eq!(
        first.unwrap(),
        vec![sample(&a.id, 0, 20, 0.01)],
        "read back as written"
    );
    store.close().await;

    let store = h.open().await;
    let kept = store.samples(&a.id, Timestamp(0)).await.unwrap();
    assert!(
        kept.len() <= 30 && kept.len() > 10,
        "{} samples kept",
        kept.len()
    );
    assert!(kept.windows(2).all(|w| w[0].at < w[1].at), "oldest first");
    assert_eq!(
        kept.iter().map(|s| s.snapshots).sum::<i64>(),
        200,
        "every snapshot counted once"
    );
    // The newest keep full resolution; the older ones still reach back to the start.
    let newest: Vec<i64> = kept[kept.len() - 10..].iter().map(|s| s.at.0).collect();
    assert_eq!(newest, (190..200).map(|i| i * 2_000).collect::<Vec<_>>());
    assert!(
        kept[0].snapshots > 1 && kept[0].at.0 < 40_000,
        "{:?}",
        kept[0].at
    );
    let worst = kept
        .iter()
        .filter_map(|s| s.canary.as_ref()?.error_rate)
        .fold(0.0, f64::max);
    assert_eq!(worst, 0.75, "the spike is still on the chart");
    assert_eq!(
        store.samples(&b.id, Timestamp(0)).await.unwrap().len(),
        kept.len()
    );
    let since = store.samples(&a.id, Timestamp(396_000)).await.unwrap();
    assert_eq!(
        since.iter().map(|s| s.at.0).collect::<Vec<_>>(),
        [396_000, 398_000]
    );
    assert!(
        store
            .samples("ro-none", Timestamp(0))
            .await
            .unwrap()
            .is_empty()
    );

    let mut bad = sample(&a.id, 1, 120, 0.0);
    let err = store
        .append_samples(&[bad.clone()], bounds)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { .. }) && err.to_string().contains("120"),
        "{err}"
    );
    bad.canary_weight = 10;
    let err = store
        .append_samples(
            &[bad],
            SampleBounds {
                max_per_rollout: 5,
                full_resolution: 5,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

pub async fn chart_samples_of_old_rollouts_are_pruned(h: &impl Harness) {
    let store = h.open().await;
    let old = create(&store, "shop", "v2").await;
    let bounds = SampleBounds::default();
    store
        .append_samples(
            &[sample(&old.id, 1, 20, 0.0), sample(&old.id, 2, 20, 0.0)],
            bounds,
        )
        .await
        .unwrap();
    let old = advance(&store, &old.id, old.revision, "Failed", json!({})).await;
    let running = create(&store, "shop", "v3").await;
    store
        .append_samples(&[sample(&running.id, 3, 20, 0.0)], bounds)
        .await
        .unwrap();
    let finished = old.finished_at.unwrap();
    assert_eq!(
        store.prune_samples(finished).await.unwrap(),
        0,
        "not older than the cut"
    );
    assert_eq!(
        store
            .prune_samples(Timestamp(finished.0 + 1))
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .samples(&old.id, Timestamp(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .samples(&running.id, Timestamp(0))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.events(&old.id, 0).await.unwrap().len(),
        1,
        "the history stays"
    );
}

pub async fn chart_sample_counts_outside_the_columns_are_clamped(h: &impl Harness) {
    let store = h.open().await;
    let r = create(&store, "shop", "v2").await;
    let mut huge = sample(&r.id, 1, 20, 0.0);
    let canary = huge.canary.as_mut().unwrap();
    canary.total_requests = u64::MAX;
    canary.requests = 1 << 63;
    store
        .append_samples(&[huge], SampleBounds::default())
        .await
        .unwrap();
    let read = store.samples(&r.id, Timestamp(0)).await.unwrap();
    let canary = read[0].canary.as_ref().unwrap();
    assert_eq!(
        (canary.requests, canary.total_requests),
        (i64::MAX as u64, i64::MAX as u64),
        "a count beyond a signed 64-bit column is kept as its largest value"
    );
    assert_eq!(canary.errors, 2, "the counts that fit are kept as they are");

    // Written behind the store's back: a negative count is no count.
    h.execute("UPDATE samples SET canary_errors = -5, stable_requests = -1")
        .await;
    let read = store.samples(&r.id, Timestamp(0)).await.unwrap();
    assert_eq!(read[0].canary.as_ref().unwrap().errors, 0);
    assert_eq!(read[0].stable.as_ref().unwrap().requests, 0);
}

// === rollout groups ===

fn new_group(name: &str, phase: &str) -> NewGroup {
    NewGroup {
        name: name.into(),
        phase: phase.into(),
        spec: json!({"name": name, "order": "lockstep", "rollouts": ["web", "api"]}),
        state: json!({"step": 0}),
        fence: None,
    }
}

fn group_update(id: &str, revision: i64, phase: &str, state: Value) -> GroupUpdate {
    GroupUpdate {
        id: id.into(),
        expected_revision: revision,
        phase: phase.into(),
        state,
        fence: None,
    }
}

/// Creates a group, which must succeed.
async fn create_group(store: &Arc<dyn Store>, name: &str, phase: &str) -> GroupRecord {
    store.create_group(new_group(name, phase)).await.unwrap()
}

/// The ids of `groups`, in order.
fn group_ids(groups: &[GroupRecord]) -> Vec<&str> {
    groups.iter().map(|g| g.id.as_str()).collect()
}

pub async fn groups_crud_and_listing(h: &impl Harness) {
    let store = h.open().await;
    assert!(store.list_groups(false, None).await.unwrap().is_empty());
    let new = new_group("shop", "Progressing");
    let a = store.create_group(new.clone()).await.unwrap();
    assert!(a.id.starts_with("gr-") && a.id.len() == 15, "{}", a.id);
    assert!(a.id[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!((a.name.as_str(), a.phase.as_str()), ("shop", "Progressing"));
    assert_eq!((&a.spec, &a.state), (&new.spec, &new.state));
    assert_eq!(a.revision, 1);
    assert_eq!(a.created_at, a.updated_at);
    assert_eq!(a.finished_at, None);
    assert_eq!(store.get_group(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_group("gr-nope").await.unwrap(), None);

    let b = create_group(&store, "cart", "Paused").await;
    let c = create_group(&store, "done", "Succeeded").await;
    assert!(c.finished_at.is_some(), "created finished");
    assert_ne!(a.id, b.id);

    let list = async |active_only, limit| store.list_groups(active_only, limit).await.unwrap();
    assert_eq!(list(false, None).await, [c.clone(), b.clone(), a.clone()]);
    assert_eq!(group_ids(&list(true, None).await), [&b.id, &a.id]);
    assert_eq!(group_ids(&list(false, Some(1)).await), [&c.id]);
    assert_eq!(group_ids(&list(true, Some(1)).await), [&b.id]);
    assert!(list(false, Some(0)).await.is_empty());

    // Refused with the bad value named, and nothing written.
    let err = store
        .create_group(new_group("shop", "Pending"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid { field: "group phase", reason } if reason.contains("`Pending`")),
        "{err:?}"
    );
    let err = store
        .create_group(new_group(" ", "Progressing"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "group name",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(list(false, None).await.len(), 3);

    // Groups survive a reopen unchanged.
    store.close().await;
    let store = h.open().await;
    assert_eq!(store.get_group(&c.id).await.unwrap(), Some(c));
}

pub async fn group_updates_are_revision_checked(h: &impl Harness) {
    let store = h.open().await;
    let g = create_group(&store, "shop", "Progressing").await;
    let g2 = store
        .update_group(group_update(&g.id, 1, "Paused", json!({"step": 1})))
        .await
        .unwrap();
    assert_eq!(g2.revision, 2);
    assert_eq!(g2.state, json!({"step": 1}));
    assert_eq!(
        (g2.spec.clone(), g2.created_at),
        (g.spec.clone(), g.created_at)
    );
    assert!(g2.updated_at >= g.updated_at);
    assert_eq!(g2.finished_at, None);
    assert_eq!(store.get_group(&g.id).await.unwrap(), Some(g2.clone()));

    // A writer that read revision 1 lost the race.
    let err = store
        .update_group(group_update(&g.id, 1, "Aborted", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { id, expected: 1, actual: 2 } if *id == g.id),
        "{err:?}"
    );
    assert!(err.to_string().contains("rollout group"), "{err}");

    // Finishing sets finished_at; becoming active again clears it.
    let done = store
        .update_group(group_update(&g.id, 2, "Failed", json!({"step": 1})))
        .await
        .unwrap();
    let finished = done.finished_at.expect("finished");
    let still = store
        .update_group(group_update(&g.id, 3, "Aborted", json!({})))
        .await
        .unwrap();
    assert_eq!(
        still.finished_at,
        Some(finished),
        "the first finish is kept"
    );
    let again = store
        .update_group(group_update(
            &g.id,
            4,
            "Progressing",
            json!({"retry": true}),
        ))
        .await
        .unwrap();
    assert_eq!((again.revision, again.finished_at), (5, None));

    let err = store
        .update_group(group_update("gr-missing", 1, "Paused", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { id } if id == "gr-missing"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("rollout group `gr-missing`"),
        "{err}"
    );
    let err = store
        .update_group(group_update(&g.id, 5, "Pending", json!({})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("found `Pending`"), "{err}");
    assert_eq!(store.get_group(&g.id).await.unwrap(), Some(again));

    // Of many writers racing from the same revision, exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let id = g.id.clone();
            tokio::spawn(async move {
                store
                    .update_group(group_update(&id, 5, "Paused", json!({"writer": i})))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                won += 1;
                assert_eq!(r.revision, 6);
            }
            Err(StoreError::Conflict { actual: 6, .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(won, 1);
}

pub async fn stale_fence_refuses_group_writes(h: &impl Harness) {
    let store = h.open().await;
    let a = lease(&store, "controller", "node-a").await.unwrap();
    let new = new_group("shop", "Progressing").fenced(&a);
    let g = store.create_group(new).await.unwrap();
    let u = group_update(&g.id, 1, "Paused", json!({"by": "a"})).fenced(&a);
    let g = store.update_group(u).await.unwrap();

    let b = hand_over(&store, &a).await;
    let stale = group_update(&g.id, g.revision, "Aborted", json!({"by": "a"})).fenced(&a);
    let err = store.update_group(stale).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                epoch: 1,
                current: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    let stale_create = new_group("cart", "Progressing").fenced(&a);
    assert!(matches!(
        store.create_group(stale_create).await.unwrap_err(),
        StoreError::Fenced { .. }
    ));
    assert_eq!(store.get_group(&g.id).await.unwrap(), Some(g.clone()));
    assert_eq!(store.list_groups(false, None).await.unwrap().len(), 1);

    let fresh = group_update(&g.id, g.revision, "Progressing", json!({"by": "b"})).fenced(&b);
    assert_eq!(store.update_group(fresh).await.unwrap().revision, 3);
}

pub async fn rollouts_belong_to_their_group(h: &impl Harness) {
    let store = h.open().await;
    let g = create_group(&store, "shop", "Progressing").await;
    let other = create_group(&store, "other", "Progressing").await;
    let in_group = |app: &str| NewRollout {
        group: Some(g.id.clone()),
        ..new_rollout(app, "v2")
    };
    let web = store.create_rollout(in_group("web")).await.unwrap();
    let alone = create(&store, "solo", "v2").await;
    let api = store.create_rollout(in_group("api")).await.unwrap();
    assert_eq!(web.group.as_deref(), Some(g.id.as_str()));
    assert_eq!(alone.group, None);

    // The column is read back everywhere a rollout is.
    assert_eq!(store.get_rollout(&web.id).await.unwrap(), Some(web.clone()));
    let web = advance(&store, &web.id, 1, "Progressing", json!({"stage": 0})).await;
    assert_eq!(web.group.as_deref(), Some(g.id.as_str()), "kept by updates");
    assert!(
        all_rollouts(&store)
            .await
            .iter()
            .all(|r| r.group.is_some() == (r.id != alone.id))
    );
    let active = store.active_rollouts().await.unwrap();
    assert_eq!(active.len(), 3);

    let members = store.rollouts_of_group(&g.id).await.unwrap();
    assert_eq!(members, [web.clone(), api.clone()], "oldest first");
    assert!(store.rollouts_of_group(&other.id).await.unwrap().is_empty());
    assert!(store.rollouts_of_group("gr-nope").await.unwrap().is_empty());

    // A group that does not exist is refused, naming it; nothing is written.
    let orphan = NewRollout {
        group: Some("gr-nope".into()),
        ..new_rollout("cart", "v2")
    };
    let err = store.create_rollout(orphan).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { id } if id == "gr-nope"),
        "{err:?}"
    );
    assert!(
        store
            .latest_rollout_for_app("cart")
            .await
            .unwrap()
            .is_none()
    );

    // Without a group the JSON of a rollout is as it always was.
    let plain = serde_json::to_value(&alone).unwrap();
    assert!(plain.get("group").is_none(), "{plain}");
    let back: RolloutRecord = serde_json::from_value(plain).unwrap();
    assert_eq!(back, alone);
    let grouped = serde_json::to_value(&web).unwrap();
    assert_eq!(grouped["group"], json!(g.id));
    assert_eq!(
        serde_json::from_value::<RolloutRecord>(grouped).unwrap(),
        web
    );
}

/// The schema of each backend as fledge before rollout groups left it (version 2).
fn schema_2(url: &str) -> [&'static str; 2] {
    if url.starts_with("postgres") {
        [
            include_str!("../../migrations/postgres/0001_init.sql"),
            include_str!("../../migrations/postgres/0002_samples.sql"),
        ]
    } else {
        [
            include_str!("../../migrations/sqlite/0001_init.sql"),
            include_str!("../../migrations/sqlite/0002_samples.sql"),
        ]
    }
}

pub async fn a_schema_2_database_migrates_forward(h: &impl Harness) {
    // A database written at schema version 2, with a rollout and its event.
    h.execute(
        "CREATE TABLE fledge_migrations (version BIGINT PRIMARY KEY NOT NULL, \
         name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await;
    for sql in schema_2(&h.url()) {
        h.execute(sql).await;
    }
    h.execute(
        "INSERT INTO fledge_migrations (version, name, applied_at) \
         VALUES (1, 'apps, rollouts, events, leases', 0), (2, 'chart samples', 0)",
    )
    .await;
    h.execute(
        "INSERT INTO rollouts (id, app, version, phase, spec_text, spec, state, revision, \
         last_seq, created_at, updated_at) VALUES ('ro-0123456789ab', 'web', 'v2', \
         'Progressing', 'app: web', '{\"app\":\"web\"}', '{\"stage\":1}', 4, 1, 1000, 2000)",
    )
    .await;
    h.execute(
        "INSERT INTO events (rollout_id, seq, at, kind, actor, message, evidence) \
         VALUES ('ro-0123456789ab', 1, 1000, 'Created', 'alice', 'created', 'null')",
    )
    .await;

    let store = h.open().await;
    let old = store.get_rollout("ro-0123456789ab").await.unwrap().unwrap();
    assert_eq!((old.revision, old.group.clone()), (4, None));
    assert_eq!(old.state, json!({"stage": 1}));
    assert_eq!(store.events(&old.id, 0).await.unwrap().len(), 1);
    let old = advance(&store, &old.id, 4, "Succeeded", json!({})).await;
    assert_eq!(old.revision, 5);

    // The new schema is there: groups and grouped rollouts.
    let g = create_group(&store, "shop", "Progressing").await;
    let r = store
        .create_rollout(NewRollout {
            group: Some(g.id.clone()),
            ..new_rollout("web", "v3")
        })
        .await
        .unwrap();
    assert_eq!(
        store.rollouts_of_group(&g.id).await.unwrap(),
        std::slice::from_ref(&r)
    );
    store.close().await;

    // Opening again finds nothing left to migrate.
    let store = h.open().await;
    assert_eq!(store.get_group(&g.id).await.unwrap(), Some(g));
    assert_eq!(store.get_rollout(&r.id).await.unwrap(), Some(r));
    assert_eq!(store.get_rollout(&old.id).await.unwrap(), Some(old));
}
