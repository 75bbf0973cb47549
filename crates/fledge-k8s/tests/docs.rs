//! The CanaryRollout part of docs/spec.md cannot drift from the CRD: every field of
//! the resource outside `spec.rollout` (which `fledge-spec`'s docs test covers) is
//! named in the page's Kubernetes section, and every `yaml canaryrollout` example of
//! the docs is a CanaryRollout the API server and the operator's types accept.

use std::collections::BTreeSet;

use fledge_k8s::CanaryRollout;
use fledge_k8s::schema::validate;
use serde_json::Value;

const SPEC_DOC: &str = include_str!("../../../docs/spec.md");
const MIGRATION_DOC: &str = include_str!("../../../docs/from-argo-and-flagger.md");

fn crd_schema() -> Value {
    let crd = serde_json::to_value(fledge_k8s::crd()).expect("the CRD is JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every property below `spec` and `status` as a dotted path, lists and maps seen
/// through (`spec.targetRef.containers.image`), leaving out `spec.rollout`.
fn field_paths(schema: &Value, path: &str, out: &mut Vec<String>) {
    if path == "spec.rollout" {
        return;
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        let child = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        out.push(child.clone());
        field_paths(property, &child, out);
        field_paths(&property["items"], &child, out);
        field_paths(&property["additionalProperties"], &child, out);
    }
}

#[test]
fn canaryrollout_examples_are_valid_resources() {
    let schema = crd_schema();
    let mut seen = 0;
    for (name, doc) in [
        ("docs/spec.md", SPEC_DOC),
        ("docs/from-argo-and-flagger.md", MIGRATION_DOC),
    ] {
        for part in doc.split("```yaml canaryrollout\n").skip(1) {
            let yaml = part.split("\n```").next().unwrap_or_default();
            let object: Value =
                serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(validate(&schema, &object), Vec::<String>::new(), "{name}");
            let typed: CanaryRollout =
                serde_json::from_value(object).unwrap_or_else(|e| panic!("{name}: {e}"));
            let router = &typed.spec.router;
            let routers = [
                router.istio.is_some(),
                router.smi.is_some(),
                router.gateway_api.is_some(),
                router.nginx_ingress.is_some(),
            ];
            assert_eq!(routers.iter().filter(|r| **r).count(), 1, "{name}");
            seen += 1;
        }
    }
    assert!(seen >= 2, "found {seen} `yaml canaryrollout` examples");
}

#[test]
fn every_crd_field_is_named_in_the_kubernetes_section() {
    let start = SPEC_DOC
        .find("## Kubernetes")
        .expect("docs/spec.md has a Kubernetes section");
    let words: BTreeSet<&str> = SPEC_DOC[start..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let schema = crd_schema();
    let mut paths = Vec::new();
    for root in ["spec", "status"] {
        field_paths(&schema["properties"][root], root, &mut paths);
    }
    assert!(paths.len() > 40, "too few fields found: {paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !words.contains(p.rsplit('.').next().unwrap_or_default()))
        .collect();
    assert!(
        missing.is_empty(),
        "spec.md's Kubernetes part lacks {missing:?}"
    );
}
