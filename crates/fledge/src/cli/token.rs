//! `fledge token`: makes a new random access token and prints the config entry that
//! holds its hash. The token itself is shown once and stored nowhere.

use std::process::ExitCode;

use clap::Args;
use rand::Rng as _;

use fledge_server::auth::{sha256, to_hex};
use fledge_server::config::Role;

use crate::view::output::{self, OutputArgs};

/// Arguments of `fledge token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Who will hold the token; recorded as the actor of their actions.
    #[arg(long, default_value = "operator")]
    pub name: String,
    /// What the token may do: viewer, operator or admin.
    #[arg(long, default_value = "operator")]
    pub role: Role,
    /// `-o json|yaml`: `{name, role, token, sha256}` for a script that stores the
    /// token in a secret and the hash in the config.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Prints a new token and its config line.
pub fn run(args: &TokenArgs) -> ExitCode {
    let token = new_token();
    let hash = to_hex(&sha256(token.as_bytes()));
    let role = args.role.to_string();
    let value = serde_json::json!({
        "name": args.name, "role": role, "token": token, "sha256": hash,
    });
    output::print_or(args.output.format, &value, || {
        let name = &args.name;
        format!(
            "token (shown once; give it to {name}):\n  {token}\n\n\
             add to fledge.yaml under auth.tokens:\n  \
             - {{name: {}, role: {role}, sha256: {hash}}}\n\n\
             or, without a config file: FLEDGE_TOKENS='{name}:{role}:<token>'\n",
            yaml_scalar(name)
        )
    })
}

/// 32 random bytes from the operating system's generator, as `fl_` + 64 hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("fl_{}", to_hex(&bytes))
}

/// Quotes a name for a YAML flow mapping when it needs it.
fn yaml_scalar(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        s.to_owned()
    } else {
        format!("{:?}", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 3 + 64);
        assert_ne!(a, new_token());
    }
}
