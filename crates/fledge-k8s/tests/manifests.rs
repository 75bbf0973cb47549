//! The CRD and the install manifests: generated from code, structural, parseable, and
//! identical to the committed files under `deploy/kubernetes/` (`FLEDGE_BLESS=1`
//! rewrites them).

use std::path::PathBuf;

use fledge_k8s::schema::{structural_problems, validate};
use fledge_k8s::{CanaryRollout, manifests};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn schema() -> Value {
    let crd = serde_json::to_value(fledge_k8s::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The text `field` picks out of each item of the JSON array `list`.
fn texts<'a>(list: &'a Value, field: impl Fn(&'a Value) -> &'a Value) -> Vec<&'a str> {
    let items = list.as_array().expect("an array");
    items
        .iter()
        .map(|item| field(item).as_str().unwrap())
        .collect()
}

#[test]
fn committed_manifests_match_the_generated_ones() {
    let bless = std::env::var_os("FLEDGE_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, content) in manifests::files() {
        let path = deploy_dir().join(name);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != content {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/kubernetes/{stale:?} differ from the generated manifests: run FLEDGE_BLESS=1 cargo test -p fledge-k8s --test manifests"
    );
}

#[test]
fn the_crd_schema_is_structural_and_complete() {
    let s = schema();
    assert_eq!(structural_problems(&s), Vec::<String>::new());
    let spec = &s["properties"]["spec"]["properties"];
    for field in ["rollout", "targetRef", "router", "metrics"] {
        assert!(spec[field]["type"].is_string(), "spec.{field} has no type");
    }
    let stages = &spec["rollout"]["properties"]["stages"]["items"]["properties"];
    assert_eq!(stages["traffic"]["maximum"], 100.0);
    let crd = serde_json::to_value(fledge_k8s::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns = texts(&version["additionalPrinterColumns"], |c| &c["name"]);
    assert_eq!(columns, ["Phase", "Stage", "Weight", "Age"]);
    assert_eq!(crd["spec"]["scope"], "Namespaced");
}

#[test]
fn a_schema_that_is_not_structural_is_caught() {
    let bad = serde_json::json!({"type": "object", "properties": {
        "a": {"properties": {"b": {"type": "string"}}},
        "c": {"$ref": "#/definitions/x"},
    }});
    let problems = structural_problems(&bad);
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn every_manifest_parses_and_the_sample_is_a_valid_canary_rollout() {
    for (name, content) in manifests::files() {
        for doc in content.split("---\n").filter(|d| !d.trim().is_empty()) {
            let v: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                v["kind"].is_string() && v["apiVersion"].is_string(),
                "{name}"
            );
        }
    }
    let sample = manifests::sample();
    assert_eq!(validate(&schema(), &sample), Vec::<String>::new());
    let typed: CanaryRollout = serde_json::from_value(sample).unwrap();
    assert_eq!(typed.spec.rollout.stages.len(), 3);
    let text = serde_json::to_string(&typed.spec.rollout).unwrap();
    fledge_spec::parse_spec(&text, "sample").unwrap();
    // The committed CRD document is the generated CRD.
    let crd: Value = serde_saphyr::from_str(&fledge_k8s::crd_yaml()).unwrap();
    assert_eq!(crd, serde_json::to_value(fledge_k8s::crd()).unwrap());
}

#[test]
fn the_validator_refuses_what_the_api_server_would() {
    let mut bad = manifests::sample();
    bad["spec"]["rollout"]["stages"][0]["traffic"] = serde_json::json!(150);
    bad["spec"]["targetRef"]["extra"] = serde_json::json!(1);
    bad["spec"]["rollout"]["stages"][1]["duration"] = serde_json::json!("ten minutes");
    let problems = validate(&schema(), &bad);
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn the_operator_role_grants_only_what_the_controller_uses() {
    let rbac = manifests::rbac();
    let role = rbac.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    for rule in role["rules"].as_array().unwrap() {
        let verbs = texts(&rule["verbs"], |v| v);
        assert!(
            !verbs.contains(&"*") && !verbs.contains(&"delete"),
            "{rule}"
        );
        assert!(
            !rule["resources"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("*"))
        );
    }
    let deploy = manifests::deployment(manifests::IMAGE);
    assert_eq!(deploy["spec"]["replicas"], 2);
}
