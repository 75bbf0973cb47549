//! Rollout groups: one document naming several apps' rollouts and how they move
//! together.
//!
//! ```yaml
//! name: checkout
//! order: together            # or a list of the apps, e.g. [api, frontend]
//! rollbackSucceeded: false   # on failure, also undo members that already succeeded
//! rollouts:
//!   - app: api
//!     version: v2
//!     stages: [{traffic: 10, duration: 1m}, {traffic: 100}]
//!   - app: frontend
//!     version: v2
//!     stages: [{traffic: 10, duration: 1m}, {traffic: 100}]
//! ```
//!
//! Each member is a rollout spec, checked exactly as [`parse_spec`](crate::parse_spec)
//! checks one, with its problems reported at `rollouts[i].…` and the member's lines
//! in the group document.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{SpecError, SpecIssue};
use crate::parse::{Located, Seg, did_you_mean, path_string};
use crate::types::{DNS_LABEL_PATTERN, RolloutSpec};
use crate::validate::check_app_name;

/// The most rollouts one group may hold.
pub const MAX_GROUP_MEMBERS: usize = 20;

/// Several apps' rollouts that move as one: in lock step or one after another, and
/// rolled back together when one of them fails or is aborted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "fledge rollout group")]
pub struct GroupSpec {
    /// The group's name, a DNS label like an app name. Names need not be unique
    /// over time: a group is found by its id, or by its name for the newest one.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// How the members move: `together` (stage by stage in lock step: no member
    /// enters stage k+1 before every member has passed stage k; all members need the
    /// same number of stages), or the apps in the order they roll out, each starting
    /// when the one before it has succeeded.
    pub order: GroupOrder,
    /// When a member fails or the group is aborted, also roll back the members that
    /// had already succeeded, each to its previous stable version at once. Default
    /// false: only members that had not succeeded are rolled back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rollback_succeeded: bool,
    /// The members: one rollout spec per app, 2 to 20 of them, each app once.
    #[schemars(length(min = 2, max = 20))]
    pub rollouts: Vec<RolloutSpec>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
fn is_false(b: &bool) -> bool {
    !*b
}

/// How a group's members move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupOrder {
    /// Stage by stage in lock step.
    Together,
    /// One after another, in this order of apps.
    Sequence(Vec<String>),
}

impl GroupSpec {
    /// The members in the order they start: all of them for `together`, else the
    /// order's. Each is an index into `rollouts`.
    pub fn start_order(&self) -> Vec<usize> {
        match &self.order {
            GroupOrder::Together => (0..self.rollouts.len()).collect(),
            GroupOrder::Sequence(apps) => apps
                .iter()
                .filter_map(|app| self.rollouts.iter().position(|r| &r.app == app))
                .collect(),
        }
    }
}

/// Parses and validates a group document (YAML, or JSON when it starts with `{`).
/// `origin` names the text in error messages.
pub fn parse_group(text: &str, origin: &str) -> Result<GroupSpec, SpecError> {
    let (group, tree) =
        crate::raw::with_lenient(|| crate::parse::read_document::<GroupSpec>(text, origin))?;
    let issues = validate_group(&group, tree.as_ref());
    SpecError::unless_empty(origin, issues).map(|()| group)
}

/// Whether a document is a rollout group (it has `rollouts:` at the top) rather
/// than one rollout's spec. A document that does not parse is not a group: reading
/// it as a spec reports its errors.
pub fn is_group_document(text: &str) -> bool {
    crate::from_yaml_str::<serde_json::Value>(text, "document")
        .is_ok_and(|v| v.get("rollouts").is_some())
}

/// [`parse_spec`](crate::parse_spec) or [`parse_group`], whichever the document is
/// (see [`is_group_document`]), on raw bytes; only whether it is valid is kept.
pub fn check_document_bytes(bytes: &[u8], origin: &str) -> Result<(), SpecError> {
    let text = crate::parse::decode(bytes, origin)?;
    if is_group_document(text) {
        parse_group(text, origin).map(|_| ())
    } else {
        crate::parse_spec(text, origin).map(|_| ())
    }
}

/// The JSON Schema of [`GroupSpec`].
pub fn group_json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(GroupSpec))
        .expect("a JSON Schema is always representable as JSON")
}

fn validate_group(group: &GroupSpec, tree: Option<&Located>) -> Vec<SpecIssue> {
    let mut issues = Vec::new();
    let mut report = |path: Vec<Seg>, message: String| {
        let pos = tree.and_then(|t| t.pos(&path));
        issues.push(SpecIssue::new(path_string(&path), message).at(pos));
    };
    let key = |k: &str| Seg::Key(k.to_owned());
    if let Err(e) = check_app_name(&group.name) {
        report(vec![key("name")], e);
    }
    let n = group.rollouts.len();
    if !(2..=MAX_GROUP_MEMBERS).contains(&n) {
        report(
            vec![key("rollouts")],
            format!("expected 2 to {MAX_GROUP_MEMBERS} rollouts, found {n}"),
        );
    }
    for (i, member) in group.rollouts.iter().enumerate() {
        if let Some(first) = group.rollouts[..i].iter().position(|r| r.app == member.app) {
            report(
                vec![key("rollouts"), Seg::Index(i), key("app")],
                format!(
                    "expected each app once, found `{}` again (it is rollouts[{first}] already)",
                    member.app
                ),
            );
        }
    }
    match &group.order {
        GroupOrder::Together => {
            if let Some(first) = group.rollouts.first() {
                for (i, member) in group.rollouts.iter().enumerate().skip(1) {
                    if member.stages.len() != first.stages.len() {
                        report(
                            vec![key("rollouts"), Seg::Index(i), key("stages")],
                            format!(
                                "expected {} stages like rollouts[0] (`order: together` moves \
                                 the members stage by stage), found {}",
                                first.stages.len(),
                                member.stages.len()
                            ),
                        );
                    }
                }
            }
        }
        GroupOrder::Sequence(apps) => {
            let known: Vec<&str> = group.rollouts.iter().map(|r| r.app.as_str()).collect();
            for (i, app) in apps.iter().enumerate() {
                let path = vec![key("order"), Seg::Index(i)];
                if !known.contains(&app.as_str()) {
                    let hint = did_you_mean(app, known.iter().copied())
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    report(
                        path,
                        format!(
                            "expected one of the group's apps ({}), found `{app}`{hint}",
                            known.join(", ")
                        ),
                    );
                } else if apps[..i].contains(app) {
                    report(path, format!("expected each app once, found `{app}` again"));
                }
            }
            for app in known.iter().filter(|a| !apps.iter().any(|o| o == *a)) {
                report(
                    vec![key("order")],
                    format!("expected every member in the order, found no `{app}`"),
                );
            }
        }
    }
    for (i, member) in group.rollouts.iter().enumerate() {
        let base = [key("rollouts"), Seg::Index(i)];
        let sub = tree.and_then(|t| t.subtree(&base));
        for mut issue in crate::validate::validate(member, sub.as_ref()) {
            let prefix = path_string(&base);
            issue.path = if issue.path.is_empty() {
                prefix
            } else {
                format!("{prefix}.{}", issue.path)
            };
            issues.push(issue);
        }
    }
    issues.sort_by_key(|i| (i.line.is_none(), i.line, i.column));
    issues
}

// === impl GroupOrder ===

impl Serialize for GroupOrder {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GroupOrder::Together => s.serialize_str("together"),
            GroupOrder::Sequence(apps) => apps.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for GroupOrder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OrderVisitor;
        impl<'de> Visitor<'de> for OrderVisitor {
            type Value = GroupOrder;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`together` or a list of the group's apps")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GroupOrder, E> {
                if v == "together" {
                    Ok(GroupOrder::Together)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GroupOrder, A::Error> {
                let mut apps = Vec::new();
                while let Some(app) = seq.next_element::<String>()? {
                    apps.push(app);
                }
                Ok(GroupOrder::Sequence(apps))
            }
        }
        d.deserialize_any(OrderVisitor)
    }
}

impl JsonSchema for GroupOrder {
    fn schema_name() -> Cow<'static, str> {
        "GroupOrder".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`together` (lock step), or the group's apps in the order they roll out.",
            "oneOf": [
                {"type": "string", "enum": ["together"]},
                {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": DNS_LABEL_PATTERN},
                    "minItems": 2,
                    "maxItems": MAX_GROUP_MEMBERS,
                    "uniqueItems": true
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "\
name: checkout
order: [api, frontend]
rollouts:
  - app: frontend
    version: v2
    stages: [{traffic: 10, duration: 1m}, {traffic: 100}]
  - app: api
    version: v2
    stages: [{traffic: 50, duration: 1m}, {traffic: 100}]
";

    /// Why `text`, read as `g.yaml`, is not a group.
    fn refusal(text: &str) -> String {
        parse_group(text, "g.yaml").unwrap_err().to_string()
    }

    #[test]
    fn a_sequence_starts_in_its_order() {
        let group = parse_group(GROUP, "g.yaml").unwrap();
        assert_eq!(group.start_order(), vec![1, 0]);
        assert!(!group.rollback_succeeded);
        let json = serde_json::to_string(&group).unwrap();
        assert_eq!(parse_group(&json, "g.json").unwrap(), group);
    }

    #[test]
    fn members_are_checked_where_they_are_written() {
        let err = refusal(&GROUP.replace("traffic: 50", "traffic: 150"));
        assert!(
            err.starts_with("g.yaml:9:") && err.contains("rollouts[1].stages[0].traffic"),
            "{err}"
        );
    }

    #[test]
    fn the_order_names_every_member_once() {
        let err = refusal(&GROUP.replace("[api, frontend]", "[api, fronted]"));
        assert!(
            err.contains("g.yaml:2:") && err.contains("did you mean `frontend`"),
            "{err}"
        );
        assert!(err.contains("found no `frontend`"), "{err}");
        let err = refusal(&GROUP.replace("[api, frontend]", "sideways"));
        assert!(err.contains("`together` or a list"), "{err}");
    }

    #[test]
    fn together_needs_as_many_stages_in_every_member() {
        let text = GROUP.replace("[api, frontend]", "together").replace(
            "[{traffic: 50, duration: 1m}, {traffic: 100}]",
            "[{traffic: 100}]",
        );
        let err = refusal(&text);
        assert!(
            err.contains("rollouts[1].stages: expected 2 stages"),
            "{err}"
        );
    }

    #[test]
    fn a_group_has_two_or_more_distinct_apps() {
        let text = GROUP
            .replace("app: api", "app: frontend")
            .replace("[api, frontend]", "together");
        let err = refusal(&text);
        assert!(err.contains("found `frontend` again"), "{err}");
        let one = "name: g\norder: together\nrollouts:\n  - {app: a, version: v2, stages: [{traffic: 100}]}\n";
        let err = refusal(one);
        assert!(err.contains("expected 2 to 20 rollouts, found 1"), "{err}");
    }
}
