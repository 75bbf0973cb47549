//! Leader election on a Lease, against a mocked API server with injected time.

mod support;

use std::time::Duration;

use fledge_k8s::leader::LeaderElector;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use support::mock::{self, expect, expect_with};

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

async fn elect(identity: &str, at: Timestamp, script: Vec<mock::Exchange>) -> bool {
    let (client, task) = mock::server(script);
    let elector = LeaderElector::new(
        client,
        "fledge-system",
        "fledge-operator",
        identity,
        Duration::from_secs(15),
    );
    let led = tokio::time::timeout(Duration::from_secs(5), elector.try_acquire_or_renew(at))
        .await
        .unwrap()
        .unwrap();
    mock::verify(task).await;
    led
}

#[tokio::test]
async fn the_first_replica_creates_the_lease() {
    let led = elect(
        "a",
        t(0),
        vec![
            expect("GET", LEASE, 404, mock::status(404, "NotFound")),
            expect_with(
                "POST",
                LEASES,
                |_, b| {
                    assert_eq!(b["spec"]["holderIdentity"], "a");
                    assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
                },
                201,
                lease("a", t(0), 0),
            ),
        ],
    )
    .await;
    assert!(led);
}

#[tokio::test]
async fn a_race_to_create_the_lease_has_one_winner() {
    let led = elect(
        "b",
        t(0),
        vec![
            expect("GET", LEASE, 404, mock::status(404, "NotFound")),
            expect("POST", LEASES, 409, mock::status(409, "AlreadyExists")),
        ],
    )
    .await;
    assert!(!led);
}

#[tokio::test]
async fn the_holder_renews_and_others_wait_while_the_lease_is_fresh() {
    let led = elect(
        "a",
        t(5),
        vec![
            expect("GET", LEASE, 200, lease("a", t(0), 0)),
            expect_with(
                "PUT",
                LEASE,
                |_, b| {
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
                },
                200,
                lease("a", t(5), 0),
            ),
        ],
    )
    .await;
    assert!(led);
    // Another replica, 14 s after the last renewal: no write at all.
    let led = elect(
        "b",
        t(14),
        vec![expect("GET", LEASE, 200, lease("a", t(0), 0))],
    )
    .await;
    assert!(!led);
}

#[tokio::test]
async fn leadership_passes_when_the_holder_stops_renewing() {
    let led = elect(
        "b",
        t(16),
        vec![
            expect("GET", LEASE, 200, lease("a", t(0), 2)),
            expect_with(
                "PUT",
                LEASE,
                |_, b| {
                    assert_eq!(b["spec"]["holderIdentity"], "b");
                    assert_eq!(b["spec"]["leaseTransitions"], 3);
                    assert_eq!(b["metadata"]["resourceVersion"], "41");
                },
                200,
                lease("b", t(16), 3),
            ),
        ],
    )
    .await;
    assert!(led);
    // Two replicas take over at once: the one whose write loses (409) does not lead.
    let led = elect(
        "c",
        t(16),
        vec![
            expect("GET", LEASE, 200, lease("a", t(0), 2)),
            expect("PUT", LEASE, 409, mock::status(409, "Conflict")),
        ],
    )
    .await;
    assert!(!led);
    // And the old holder, back after the takeover, finds it lost the Lease.
    let led = elect(
        "a",
        t(17),
        vec![expect("GET", LEASE, 200, lease("b", t(16), 3))],
    )
    .await;
    assert!(!led);
}
