//! Rollout groups driven in-process under tokio's paused clock: two apps on fake
//! routers and metric sources, the controller's tick moving the group.

use std::time::Duration;

use fledge_engine::group::GroupPhase;

use super::{Membership, phase_of_group, state_of_group};
use crate::engine::summary;
use crate::rollouts;
use crate::testing::{APP, InProcess, Serving};

const SECOND: Duration = Duration::from_secs(1);

/// A member of `app` whose first stage (20%) lasts `first`, then 50% for 5 s, then
/// 100%.
fn member(app: &str, first: &str) -> String {
    format!(
        "  - app: {app}\n    version: v2\n    analysis: {{interval: 1s, minRequests: 100}}\n    stages:\n      - {{traffic: 20, duration: {first}, successCriteria: [error_rate < 1%]}}\n      - {{traffic: 50, duration: 5s, successCriteria: [error_rate < 1%]}}\n      - {{traffic: 100, final: true, promote: true}}\n"
    )
}

fn document(order: &str, rollback_succeeded: bool, members: &[String]) -> String {
    format!(
        "name: pair\norder: {order}\nrollbackSucceeded: {rollback_succeeded}\nrollouts:\n{}",
        members.concat()
    )
}

fn stage(r: &fledge_store::RolloutRecord) -> usize {
    summary(&r.state).expect("the state reads").stage_index
}

/// The in-process core with a second app, `cart`, and a lock-step group of `shop`
/// and `cart` whose first stages last `shop_first` and `cart_first`.
async fn lock_step(
    shop_first: &str,
    cart_first: &str,
) -> (
    InProcess,
    std::sync::Arc<crate::testing::FakeRouter>,
    std::sync::Arc<crate::testing::FakeMetrics>,
    fledge_store::GroupRecord,
) {
    let h = InProcess::start().await;
    let (cart_router, cart_metrics) = h.add_app("cart").await;
    let doc = document(
        "together",
        false,
        &[member(APP, shop_first), member("cart", cart_first)],
    );
    let g = h.create_group(&doc).await;
    (h, cart_router, cart_metrics, g)
}

/// The member of `app`: its first rollout in the group.
async fn member_of(h: &InProcess, group: &str, app: &str) -> fledge_store::RolloutRecord {
    h.members(group)
        .await
        .into_iter()
        .find(|r| r.app == app)
        .unwrap_or_else(|| panic!("no member {app}"))
}

#[tokio::test(start_paused = true)]
async fn the_faster_member_waits_at_its_stage_until_the_slower_one_passed_it() {
    let (mut h, cart_router, _, g) = lock_step("5s", "20s").await;

    h.run_for(12 * SECOND).await;
    let shop = member_of(&h, &g.id, APP).await;
    assert_eq!(stage(&shop), 0, "shop's stage is done, but cart's is not");
    assert!(
        h.kinds(&shop.id)
            .await
            .contains(&"StageAdvanced".to_owned()),
        "it says it waits"
    );
    assert_eq!(h.router.weights().last(), Some(&20));

    // cart passes its 20 s: both move on in the same tick.
    h.run_for(10 * SECOND).await;
    let (shop, cart) = (
        member_of(&h, &g.id, APP).await,
        member_of(&h, &g.id, "cart").await,
    );
    assert_eq!((stage(&shop), stage(&cart)), (1, 1));
    assert_eq!(cart_router.weights().last(), Some(&50));

    h.run_for(10 * SECOND).await;
    let g = h.group(&g.id).await;
    assert_eq!(phase_of_group(&g), GroupPhase::Succeeded);
    let kinds: Vec<String> = state_of_group(&g)
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "Created",
            "MemberStarted",
            "MemberStarted",
            "Held",
            "Held",
            "Held",
            "Succeeded"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_member_rolls_the_other_back_within_a_tick() {
    let (mut h, _, cart_metrics, g) = lock_step("60s", "60s").await;
    h.run_for(3 * SECOND).await;
    cart_metrics.serve(Serving::FAILING_CANARY);
    h.run_for(3 * SECOND).await;
    let g = h.group(&g.id).await;
    assert_eq!(phase_of_group(&g), GroupPhase::Failed);
    let shop = member_of(&h, &g.id, APP).await;
    assert_eq!(shop.phase, "Aborted");
    assert_eq!(
        h.router.weights().last(),
        Some(&0),
        "shop's users are back on stable"
    );
}

#[tokio::test(start_paused = true)]
async fn passes_read_what_members_do_and_never_start_one_twice() {
    let mut h = InProcess::start().await;
    h.add_app("cart").await;
    let doc = document(
        "[shop, cart]",
        false,
        &[member(APP, "5s"), member("cart", "5s")],
    );
    let g = h.create_group(&doc).await;
    assert_eq!(
        h.members(&g.id).await.len(),
        1,
        "only the first in the order starts"
    );
    let shop = member_of(&h, &g.id, APP).await;
    h.run_until(&shop.id, 20 * SECOND, |r| r.phase == "Succeeded")
        .await;
    h.run_for(SECOND).await;
    // Passes after a restart (or many at once) start nothing more: each reads the
    // members from the store.
    for _ in 0..3 {
        let record = h.group(&g.id).await;
        super::coordinate(&h.shared, record, None).await.unwrap();
    }
    let members = h.members(&g.id).await;
    assert_eq!(
        members.iter().map(|r| r.app.as_str()).collect::<Vec<_>>(),
        [APP, "cart"]
    );
    let g = h.group(&g.id).await;
    assert_eq!(phase_of_group(&g), GroupPhase::Progressing);
    // And a member can never be created twice: the store refuses a second active
    // rollout of its app.
    let spec = fledge_spec::parse_group(&doc, "group.yaml")
        .unwrap()
        .rollouts[1]
        .clone();
    let spec = rollouts::admit(&h.shared, spec, "cart").await.unwrap();
    let principal = crate::principal::Principal {
        name: "alice".into(),
        role: crate::config::Role::Operator,
    };
    let again = Membership {
        group: &g.id,
        hold: None,
    };
    let refused = rollouts::create_member(&h.shared, &spec, &principal, "again", again).await;
    assert_eq!(refused.unwrap_err().code(), "active_rollout");
}

#[tokio::test(start_paused = true)]
async fn a_store_refusing_writes_holds_the_group_until_it_takes_them_again() {
    let (mut h, _, cart_metrics, g) = lock_step("60s", "60s").await;
    h.run_for(3 * SECOND).await;
    h.store.refuse(true);
    cart_metrics.serve(Serving::FAILING_CANARY);
    h.run_for(5 * SECOND).await;
    assert_eq!(
        phase_of_group(&h.group(&g.id).await),
        GroupPhase::Progressing
    );
    h.store.refuse(false);
    h.run_for(3 * SECOND).await;
    let g = h.group(&g.id).await;
    assert_eq!(phase_of_group(&g), GroupPhase::Failed);
    assert_eq!(member_of(&h, &g.id, APP).await.phase, "Aborted");
}
