//! `fledge import FILE...`: converts Argo Rollouts `Rollout`s and Flagger `Canary`s
//! into fledge rollout specs.
//!
//! The files may hold several YAML documents: the `Rollout`s and `Canary`s to convert
//! and the `AnalysisTemplate`s, `ClusterAnalysisTemplate`s and `MetricTemplate`s they
//! name. Each result is validated like `fledge validate` would; what could not be
//! carried over is said on stderr, with the field and why. Exit status 0 when every
//! object converted to a valid spec, 1 otherwise.

mod argo;
mod flagger;
mod kube;
mod spec;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

pub use spec::Converted;

use crate::view::output::{OutputArgs, OutputFormat};

/// Arguments of `fledge import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// YAML or JSON files with Argo Rollouts `Rollout`s or Flagger `Canary`s, and the
    /// analysis or metric templates they name; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The version being rolled out: required for a Flagger `Canary` (it has none),
    /// and used instead of the image tag for an Argo `Rollout`.
    #[arg(long, value_name = "VERSION")]
    pub new_version: Option<String>,
    /// What to print: rollout specs (for `fledge apply`), or `CanaryRollout`s for
    /// the operator, with the target Deployment, router and metric source the
    /// source names.
    #[arg(long, value_enum, default_value_t = Kind::Spec)]
    pub kind: Kind,
    /// `CONTAINER=IMAGE`, the new image of a container, for `--kind canaryrollout`
    /// when the source does not say it (a Flagger `Canary`, an Argo `workloadRef`).
    /// Repeatable.
    #[arg(long, value_name = "CONTAINER=IMAGE", value_parser = parse_image)]
    pub image: Vec<(String, String)>,
    /// `-o json` prints the specs as one JSON list; otherwise (`-o yaml`, the
    /// default) one YAML document per spec, headed by a comment naming its source.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What `fledge import` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Rollout specs.
    Spec,
    /// `CanaryRollout` resources.
    Canaryrollout,
}

/// `app=registry/app:v2` as a container name and an image.
fn parse_image(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((c, i)) if !c.is_empty() && !i.is_empty() => Ok((c.to_owned(), i.to_owned())),
        _ => Err(format!("expected CONTAINER=IMAGE, found `{text}`")),
    }
}

/// The objects of the input, by kind.
#[derive(Debug, Default)]
pub struct Input {
    rollouts: Vec<Value>,
    canaries: Vec<Value>,
    analysis_templates: BTreeMap<String, Value>,
    metric_templates: BTreeMap<String, Value>,
    /// Documents of other kinds, as `Kind/name`.
    pub ignored: Vec<String>,
}

impl Input {
    /// Sorts the documents of one file by kind.
    pub fn add_documents(&mut self, text: &str, origin: &str) -> Result<(), String> {
        let mut limits = serde_saphyr::options::AliasLimits::default();
        limits.max_total_replayed_events = 20_000;
        let options = serde_saphyr::options! { alias_limits: limits };
        let docs: Vec<Value> = serde_saphyr::from_str_multiple_with_options(text, options)
            .map_err(|e| format!("{origin}: not YAML or JSON: {e}"))?;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            match (kind.as_str(), api.split('/').next().unwrap_or_default()) {
                ("Rollout", "argoproj.io") => self.rollouts.push(doc),
                ("AnalysisTemplate" | "ClusterAnalysisTemplate", "argoproj.io") => {
                    self.analysis_templates.insert(name, doc);
                }
                ("Canary", "flagger.app") => self.canaries.push(doc),
                ("MetricTemplate", "flagger.app") => {
                    self.metric_templates.insert(name, doc);
                }
                _ => self
                    .ignored
                    .push(format!("{origin}: {kind}/{name} ({api})")),
            }
        }
        Ok(())
    }

    /// Converts every `Rollout` and `Canary`; each result beside its source.
    pub fn convert(&self, version: Option<&str>) -> Vec<(&Value, Result<Converted, String>)> {
        let argo = self
            .rollouts
            .iter()
            .map(|r| (r, argo::convert(r, &self.analysis_templates, version)));
        let flagger = self
            .canaries
            .iter()
            .map(|c| (c, flagger::convert(c, &self.metric_templates, version)));
        argo.chain(flagger).collect()
    }
}

/// Validates a converted spec as `fledge validate` would.
pub fn validate(converted: &Converted) -> Result<fledge_spec::RolloutSpec, fledge_spec::SpecError> {
    let json = serde_json::to_string(&converted.spec).expect("a spec serialises");
    fledge_spec::parse_spec(&json, &converted.source)
}

/// Runs `fledge import`.
pub fn run(args: &ImportArgs) -> ExitCode {
    let mut input = Input::default();
    for path in &args.files {
        let name = path.display().to_string();
        let text = match super::validate::read_limited(path) {
            Ok(bytes) if bytes.len() > fledge_spec::MAX_INPUT_BYTES => {
                eprintln!("{name}: larger than {} bytes", fledge_spec::MAX_INPUT_BYTES);
                return ExitCode::FAILURE;
            }
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                eprintln!("{name}: cannot read the file: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = input.add_documents(&text, &name) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    for ignored in &input.ignored {
        eprintln!("{ignored}: not a Rollout, Canary or template; ignored");
    }
    let results = input.convert(args.new_version.as_deref());
    if results.is_empty() {
        eprintln!("no Argo Rollouts `Rollout` or Flagger `Canary` in the input");
        return ExitCode::FAILURE;
    }
    let mut ok = true;
    let mut documents = Vec::new();
    for (source, result) in results {
        let mut converted = match result {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
                continue;
            }
        };
        let document = match args.kind {
            Kind::Spec => serde_json::to_value(&converted.spec).unwrap_or_default(),
            Kind::Canaryrollout => kube::canary_rollout(source, &mut converted, &args.image),
        };
        for note in &converted.notes {
            eprintln!(
                "{}: {}: not carried over: {}",
                converted.source, note.field, note.reason
            );
        }
        if let Err(e) = validate(&converted) {
            // Positions would point into an intermediate document: name fields.
            for issue in &e.issues {
                eprintln!(
                    "{}: invalid result: {}: {}",
                    converted.source, issue.path, issue.message
                );
            }
            ok = false;
        }
        if args.kind == Kind::Canaryrollout
            && let Err(e) = kube::check(&document)
        {
            eprintln!("{}: invalid result: {e}", converted.source);
            ok = false;
        }
        // A spec in the order people read it; a CanaryRollout as built.
        let yaml = match args.kind {
            Kind::Spec => serde_saphyr::to_string(&converted.spec),
            Kind::Canaryrollout => serde_saphyr::to_string(&document),
        }
        .map_err(|e| e.to_string());
        documents.push((converted.source, document, yaml));
    }
    let printed = match args.output.format {
        OutputFormat::Json => {
            let all: Vec<&Value> = documents.iter().map(|(_, d, _)| d).collect();
            serde_json::to_string_pretty(&all)
                .map(|t| t + "\n")
                .map_err(|e| e.to_string())
        }
        OutputFormat::Yaml | OutputFormat::Table => yaml_documents(&documents),
    };
    match printed {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("error: cannot print the specs: {e}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One YAML document per result, each headed by a comment naming its source.
fn yaml_documents(documents: &[(String, Value, Result<String, String>)]) -> Result<String, String> {
    let mut out = String::new();
    for (source, _, yaml) in documents {
        out.push_str(&format!(
            "---\n# fledge import of {source}\n{}",
            yaml.clone()?
        ));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
