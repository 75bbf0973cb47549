//! Operator commands: the `fledge.dev/command` annotation (with its id and actor),
//! which `fledge` writes and the controller runs once per id.

use fledge_engine::Command;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::crd::{
    ANNOTATION_ACTOR, ANNOTATION_COMMAND, ANNOTATION_COMMAND_ID, CanaryRollout, CanaryRolloutStatus,
};
use crate::error::Error;

/// The command in the annotations (text, id) when its id was not processed yet.
pub(super) fn pending_command(
    obj: &CanaryRollout,
    status: &CanaryRolloutStatus,
) -> Option<(String, String)> {
    let annotations = obj.annotations();
    match (
        annotations.get(ANNOTATION_COMMAND),
        annotations.get(ANNOTATION_COMMAND_ID),
    ) {
        (Some(cmd), Some(id)) if Some(id) != status.last_command_id.as_ref() => {
            Some((cmd.clone(), id.clone()))
        }
        _ => None,
    }
}

/// Every operator command, as the `fledge.dev/command` annotation spells it.
pub const COMMANDS: [&str; 6] = [
    "promote",
    "promote-full",
    "abort",
    "pause",
    "resume",
    "retry",
];

/// An operator command as the `fledge.dev/command` annotation spells it.
pub fn parse_command(text: &str) -> Result<Command, Error> {
    Ok(match text.trim() {
        "promote" => Command::Promote { full: false },
        "promote-full" => Command::Promote { full: true },
        "abort" => Command::Abort { reason: None },
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "retry" => Command::Retry,
        other => {
            return Err(Error::InvalidCommand(format!(
                "expected one of {}, found `{other}`",
                COMMANDS.join(", ")
            )));
        }
    })
}

/// Sends an operator command by annotating the CanaryRollout: the controller runs it
/// once (per id) and records the id in the status.
pub async fn send_command(
    client: &kube::Client,
    ns: &str,
    name: &str,
    command: &str,
    actor: &str,
    id: &str,
) -> Result<(), Error> {
    parse_command(command)?;
    let api: Api<CanaryRollout> = Api::namespaced(client.clone(), ns);
    let body = json!({"metadata": {"annotations": {
        ANNOTATION_COMMAND: command,
        ANNOTATION_COMMAND_ID: id,
        ANNOTATION_ACTOR: actor,
    }}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| Error::kube(format!("annotate CanaryRollout {ns}/{name}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_command_parses_and_nothing_else_does() {
        for name in COMMANDS {
            assert!(parse_command(name).is_ok(), "{name} is listed but refused");
        }
        let err = parse_command("promote-now").unwrap_err().to_string();
        assert!(
            err.contains("promote-full") && err.contains("`promote-now`"),
            "{err}"
        );
    }
}
