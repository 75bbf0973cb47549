//! Leader election on a Lease, against a mocked API server with injected time.

mod support;

use std::time::Duration;

use fledge_k8s::leader::LeaderElector;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use support::mock::{self, Expect, Script};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/fledge-system/leases/fledge-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/fledge-system/leases";

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn lease(holder: &str, renewed: Timestamp, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "fledge-operator", "namespace": "fledge-system", "resourceVersion": "41"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                 "acquireTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                 "leaseTransitions": transitions},
    })
}

/// A script whose first request reads the Lease, answered `status` with `body`.
fn read_lease(status: u16, body: Value) -> Script {
    Script::new().expect("GET", LEASE).respond(status, body)
}

/// A script that reads the Lease `current`, then writes it for `holder` over the
/// version read (optimistic concurrency); the caller answers the write.
fn write_lease(current: Value, holder: &'static str) -> Expect {
    read_lease(200, current)
        .expect("PUT", LEASE)
        .body(move |b| {
            assert_eq!(b["metadata"]["resourceVersion"], "41", "{b}");
            assert_eq!(b["spec"]["holderIdentity"], holder);
        })
}

async fn elect(identity: &str, at: Timestamp, script: Script) -> bool {
    script
        .run(|client| async move {
            let elector = LeaderElector::new(
                client,
                "fledge-system",
                "fledge-operator",
                identity,
                Duration::from_secs(15),
            );
            elector.try_acquire_or_renew(at).await
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn the_first_replica_creates_the_lease() {
    let script = read_lease(404, mock::status(404, "NotFound"))
        .expect("POST", LEASES)
        .body(|b| {
            assert_eq!(b["spec"]["holderIdentity"], "a");
            assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
        })
        .respond(201, lease("a", t(0), 0));
    assert!(elect("a", t(0), script).await);
}

#[tokio::test]
async fn a_race_to_create_the_lease_has_one_winner() {
    let script = read_lease(404, mock::status(404, "NotFound"))
        .expect("POST", LEASES)
        .respond(409, mock::status(409, "AlreadyExists"));
    assert!(!elect("b", t(0), script).await);
}

#[tokio::test]
async fn the_holder_renews_and_others_wait_while_the_lease_is_fresh() {
    let script = write_lease(lease("a", t(0), 0), "a")
        .body(|b| {
            assert!(
                b["spec"]["renewTime"]
                    .as_str()
                    .unwrap()
                    .starts_with("2027-01-15T08:00:05"),
                "{b}"
            );
        })
        .respond(200, lease("a", t(5), 0));
    assert!(elect("a", t(5), script).await);
    // Another replica, 14 s after the last renewal: no write at all.
    let script = read_lease(200, lease("a", t(0), 0));
    assert!(!elect("b", t(14), script).await);
}

#[tokio::test]
async fn leadership_passes_when_the_holder_stops_renewing() {
    let script = write_lease(lease("a", t(0), 2), "b")
        .body(|b| assert_eq!(b["spec"]["leaseTransitions"], 3))
        .respond(200, lease("b", t(16), 3));
    assert!(elect("b", t(16), script).await);
    // Two replicas take over at once: the one whose write loses (409) does not lead.
    let script = write_lease(lease("a", t(0), 2), "c").respond(409, mock::status(409, "Conflict"));
    assert!(!elect("c", t(16), script).await);
    // And the old holder, back after the takeover, finds it lost the Lease.
    let script = read_lease(200, lease("b", t(16), 3));
    assert!(!elect("a", t(17), script).await);
}
