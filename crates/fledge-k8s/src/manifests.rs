//! The install manifests under `deploy/kubernetes/`, generated from code so they
//! cannot drift from the CRD and the controller's needs.

use serde::Serialize;

/// One object as YAML (a document without the leading `---`).
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_value(value).expect("Kubernetes objects are JSON");
    serde_saphyr::to_string(&json).expect("JSON is representable as YAML")
}
