//! The spec's hook lists: each named as in the spec, holding its own hooks, in the
//! order of a rollout's life, the first three of them gates.

use fledge_spec::{Hook, HookList, parse_spec};

/// A spec with one exec hook in every list, each hook's command the list's name; the
/// lists are written in the reverse of their order, which the spec does not care about.
fn spec() -> fledge_spec::RolloutSpec {
    let hooks: String = HookList::ALL
        .into_iter()
        .rev()
        .map(|list| format!("  {0}:\n    - exec: {{command: [{0}]}}\n", list.as_str()))
        .collect();
    let text = format!(
        "app: shop\nversion: v2\nhooks:\n{hooks}stages:\n  - traffic: 100\n    final: true\n    promote: true\n"
    );
    parse_spec(&text, "hooks.yaml").expect("a valid spec")
}

fn command(hook: &Hook) -> &str {
    match hook {
        Hook::Exec(exec) => &exec.command[0],
        other => panic!("an exec hook, not {other:?}"),
    }
}

#[test]
fn each_list_holds_the_hooks_written_under_its_name() {
    let spec = spec();
    for list in HookList::ALL {
        let hooks = spec.hooks.list(list);
        assert_eq!(hooks.len(), 1, "{}", list.as_str());
        assert_eq!(command(&hooks[0]), list.as_str());
    }
}

#[test]
fn hooks_are_listed_in_the_order_of_a_rollouts_life() {
    let spec = spec();
    let names: Vec<&str> = spec.hooks.iter().map(|(list, _, _)| list).collect();
    assert_eq!(
        names,
        [
            "beforeRollout",
            "eachStage",
            "beforePromotion",
            "afterPromotion",
            "afterRollback",
            "onEvent"
        ]
    );
    assert!(!spec.hooks.is_empty());
}

#[test]
fn only_the_lists_before_traffic_moves_on_are_gates() {
    let gates: Vec<&str> = HookList::ALL
        .into_iter()
        .filter(|list| list.is_gate())
        .map(HookList::as_str)
        .collect();
    assert_eq!(gates, ["beforeRollout", "eachStage", "beforePromotion"]);
}

#[test]
fn a_list_serializes_as_its_name_and_reads_back() {
    for list in HookList::ALL {
        let json = serde_json::to_value(list).expect("serializable");
        assert_eq!(json, list.as_str());
        assert_eq!(serde_json::from_value::<HookList>(json).ok(), Some(list));
    }
}
