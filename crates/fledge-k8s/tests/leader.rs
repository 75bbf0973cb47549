//! Leader election on a Lease, against a mocked API server with injected time.

mod support;

use std::time::Duration;

use fledge_k8s::leader::LeaderElector;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use support::mock::{self, Script};

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
    let script = Script::new()
        .expect("GET", LEASE)
        .respond(404, mock::status(404, "NotFound"))
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
    let script = Script::new()
        .expect("GET", LEASE)
        .respond(404, mock::status(404, "NotFound"))
        .expect("POST", LEASES)
        .respond(409, mock::status(409, "AlreadyExists"));
    assert!(!elect("b", t(0), script).await);
}

#[tokio::test]
async fn the_holder_renews_and_others_wait_while_the_lease_is_fresh() {
    let script = Script::new()
        .expect("GET", LEASE)
        .respond(200, lease("a", t(0), 0))
        .expect("PUT", LEASE)
        .body(|b| {
            assert_eq!(
                b["metadata"]["resourceVersion"], "41",
                "renewal without optimistic concurrency"
            );
            assert_eq!(b["spec"]["holderIdentity"], "a");
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
    let script = Script::new()
        .expect("GET", LEASE)
        .respond(200, lease("a", t(0), 0));
    assert!(!elect("b", t(14), script).await);
}

#[tokio::test]
async fn leadership_passes_when_the_holder_stops_renewing() {
    let script = Script::new()
        .expect("GET", LEASE)
        .respond(200, lease("a", t(0), 2))
        .expect("PUT", LEASE)
        .body(|b| {
            assert_eq!(b["spec"]["holderIdentity"], "b");
            assert_eq!(b["spec"]["leaseTransitions"], 3);
            assert_eq!(b["metadata"]["resourceVersion"], "41");
        })
        .respond(200, lease("b", t(16), 3));
    assert!(elect("b", t(16), script).await);
    // Two replicas take over at once: the one whose write loses (409) does not lead.
    let script = Script::new()
        .expect("GET", LEASE)
        .respond(200, lease("a", t(0), 2))
        .expect("PUT", LEASE)
        .respond(409, mock::status(409, "Conflict"));
    assert!(!elect("c", t(16), script).await);
    // And the old holder, back after the takeover, finds it lost the Lease.
    let script = Script::new()
        .expect("GET", LEASE)
        .respond(200, lease("b", t(16), 3));
    assert!(!elect("a", t(17), script).await);
}
