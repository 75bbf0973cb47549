//! `fledge validate FILE...`: checks rollout specs without a server.
//!
//! Prints `FILE: ok` for each valid spec and every problem of the others as
//! `FILE:LINE:COL: FIELD: expected …, found …`. Exit status 0 when every file is
//! valid, 1 otherwise (clap's own usage errors exit with 2).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use fledge_spec::{MAX_INPUT_BYTES, SpecError, SpecIssue};

/// Arguments of `fledge validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Spec files, YAML or JSON; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print each result as one JSON object per line:
    /// `{"file", "ok", "issues": [{"line", "column", "path", "message"}]}`.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fledge validate`.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let mut all_ok = true;
    for path in &args.files {
        let name = path.display().to_string();
        let result = read_limited(path)
            .map_err(|e| {
                SpecError::single(
                    &name,
                    SpecIssue::new("", format!("cannot read the file: {e}")),
                )
            })
            .and_then(|bytes| {
                if bytes.len() > MAX_INPUT_BYTES {
                    // Read only up to the limit: report the file's real size.
                    let len = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
                    return Err(SpecError::too_large(&name, len));
                }
                fledge_spec::parse_spec_bytes(&bytes, &name)
            });
        all_ok &= result.is_ok();
        report(&name, &result, args.json);
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(name: &str, result: &Result<fledge_spec::RolloutSpec, SpecError>, json: bool) {
    if json {
        let issues = match result {
            Ok(_) => Vec::new(),
            Err(e) => e.issues.clone(),
        };
        let line = serde_json::json!({ "file": name, "ok": result.is_ok(), "issues": issues });
        println!("{line}");
        return;
    }
    match result {
        Ok(_) => println!("{name}: ok"),
        Err(e) => eprintln!("{e}"),
    }
}

/// Reads at most one byte more than the spec limit, so that a huge file is refused
/// by the parser's size check without being read whole.
fn read_limited(path: &PathBuf) -> std::io::Result<Vec<u8>> {
    let limit = MAX_INPUT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(path)?
            .take(limit)
            .read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../../examples/seed.yaml");

    fn args(files: &[&std::path::Path]) -> ValidateArgs {
        ValidateArgs {
            files: files.iter().map(|p| p.to_path_buf()).collect(),
            json: false,
        }
    }

    #[test]
    fn exit_status_says_whether_every_file_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&good, SEED).unwrap();
        std::fs::write(&bad, SEED.replace("traffic: 50", "traffic: 150")).unwrap();
        assert_eq!(run(&args(&[&good])), ExitCode::SUCCESS);
        assert_eq!(run(&args(&[&good, &bad])), ExitCode::FAILURE);
        assert_eq!(
            run(&args(&[&dir.path().join("missing.yaml")])),
            ExitCode::FAILURE
        );
    }

    #[test]
    fn huge_files_are_read_only_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge.yaml");
        std::fs::write(&huge, vec![b'#'; 3 * MAX_INPUT_BYTES]).unwrap();
        let bytes = read_limited(&huge).unwrap();
        assert_eq!(bytes.len(), MAX_INPUT_BYTES + 1);
        let err = SpecError::too_large("huge.yaml", 3 * MAX_INPUT_BYTES as u64);
        assert_eq!(
            err.to_string(),
            "huge.yaml: expected a document of at most 1048576 bytes (1 MiB), found 3145728 bytes"
        );
        assert_eq!(run(&args(&[&huge])), ExitCode::FAILURE);
    }
}
