//! `fledge validate FILE...`: checks rollout specs and rollout group documents
//! without a server.
//!
//! Prints `FILE: ok` for each valid spec and every problem of the others as
//! `FILE:LINE:COL: FIELD: expected …, found …`. Exit status 0 when every file is
//! valid, 1 otherwise (clap's own usage errors exit with 2). `-o json|yaml` prints
//! one document instead: a list of `{"file", "ok", "issues"}`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use fledge_spec::{MAX_INPUT_BYTES, SpecError, SpecIssue};

use crate::view::output::{self, OutputArgs, OutputFormat};

/// Arguments of `fledge validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Spec files or rollout group documents, YAML or JSON; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print each result as one JSON object per line, as each file is checked:
    /// `{"file", "ok", "issues": [{"line", "column", "path", "message"}]}`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// `-o json|yaml`: the same objects, as one list.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `fledge validate`.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let mut all_ok = true;
    let mut results = Vec::new();
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
                fledge_spec::check_document_bytes(&bytes, &name)
            });
        all_ok &= result.is_ok();
        match args.output.format {
            OutputFormat::Table if args.json => println!("{}", as_json(&name, &result)),
            OutputFormat::Table => report(&name, &result),
            OutputFormat::Json | OutputFormat::Yaml => results.push(as_json(&name, &result)),
        }
    }
    // The table format printed each file as it went: nothing is left to print.
    let printed = output::print_or(args.output.format, &results, String::new);
    if all_ok && printed == ExitCode::SUCCESS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type Checked = Result<(), SpecError>;

/// One file's result for scripts: `{"file", "ok", "issues"}`.
fn as_json(name: &str, result: &Checked) -> serde_json::Value {
    let issues = match result {
        Ok(_) => Vec::new(),
        Err(e) => e.issues.clone(),
    };
    serde_json::json!({ "file": name, "ok": result.is_ok(), "issues": issues })
}

/// One file's result for people: `FILE: ok`, or its problems on stderr.
fn report(name: &str, result: &Checked) {
    match result {
        Ok(_) => println!("{name}: ok"),
        Err(e) => eprintln!("{e}"),
    }
}

/// Reads at most one byte more than the spec limit, so that a huge file is refused
/// by the parser's size check without being read whole.
pub(crate) fn read_limited(path: &PathBuf) -> std::io::Result<Vec<u8>> {
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
            output: OutputArgs {
                format: OutputFormat::Table,
            },
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
