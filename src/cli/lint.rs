//! `rolltest lint` flags and the command: read the manifests, check them
//! together, print the findings, exit 1 on an error finding.

use std::{io::Read, path::PathBuf, time::Duration};

use rolltest_core::ExitStatus;

use crate::{
    lint::{self, LintOptions, PropagationSource, output},
    manifest::{self, Manifest},
    serve::parse_duration,
};

/// Shown after the flags in `rolltest lint --help`.
const AFTER_HELP: &str = "\
Checks Deployments and StatefulSets with the PodDisruptionBudgets and Services
of all given files: preStop sleep ≥ propagation, terminationGracePeriodSeconds ≥
preStop + drain, a PDB that does not block drains, maxUnavailable 0 with
maxSurge ≥ 1 and minReadySeconds, readiness/startup/liveness probes done right.
Rule IDs RT001..RT021 are listed in the docs of rolltest::lint.

Exit codes: 0 no error finding, 1 at least one error finding, 2 bad input
(unreadable or invalid YAML, a manifest without kind/apiVersion/metadata.name,
bad flags, --from-run without a measured propagation).";

/// Flags of `rolltest lint`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct LintArgs {
    /// Manifest files (multi-document YAML or JSON, `List` kinds too); `-`
    /// reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Expected endpoint propagation delay (deletion → every proxy stopped
    /// routing): the preStop sleep must be at least this, e.g. 3s, 1500ms.
    /// Default 5s; a shorter preStop is then a warning, with this flag an error.
    #[arg(long, value_name = "D", value_parser = parse_duration, conflicts_with = "from_run")]
    pub propagation: Option<Duration>,

    /// Use the propagation a run measured: DIR/summary.json
    /// `propagation.max_ms` (a preStop shorter than it is an error).
    #[arg(long, value_name = "DIR")]
    pub from_run: Option<PathBuf>,

    /// Time the app needs after SIGTERM to finish its in-flight requests;
    /// terminationGracePeriodSeconds must cover preStop + this.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "5s")]
    pub drain: Duration,

    /// Output: human (grouped per file), json (findings + summary) or sarif
    /// (SARIF 2.1.0 for code scanning).
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Findings grouped per file, then a summary line.
    Human,
    /// `{"findings": [...], "summary": {...}}`.
    Json,
    /// SARIF 2.1.0.
    Sarif,
}

/// Runs `rolltest lint` and returns the exit code.
pub fn run(args: LintArgs) -> u8 {
    match run_inner(args) {
        Ok(status) => status.code(),
        Err(message) => {
            eprintln!("error: {message}");
            ExitStatus::BadInput.code()
        }
    }
}

fn run_inner(args: LintArgs) -> Result<ExitStatus, String> {
    let opts = options(&args)?;
    let mut manifests: Vec<Manifest> = Vec::new();
    let mut stdin_read = false;
    for path in &args.files {
        if path.as_os_str() == "-" {
            if stdin_read {
                return Err("`-` (standard input) given twice".into());
            }
            stdin_read = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            manifests.extend(manifest::parse(&text, "<stdin>").map_err(|e| e.to_string())?);
        } else {
            manifests.extend(manifest::load_file(path).map_err(|e| e.to_string())?);
        }
    }
    let findings = lint::lint(&manifests, &opts);
    let summary = output::Summary::new(&findings, args.files.len(), manifests.len(), &opts);
    let text = match args.format {
        Format::Human => output::human(&findings, &summary),
        Format::Json => pretty(&output::json(&findings, &summary))?,
        Format::Sarif => pretty(&output::sarif(&findings))?,
    };
    print!("{text}");
    Ok(if lint::has_errors(&findings) {
        ExitStatus::Fail
    } else {
        ExitStatus::Pass
    })
}

fn pretty(v: &serde_json::Value) -> Result<String, String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

fn options(args: &LintArgs) -> Result<LintOptions, String> {
    let mut opts = LintOptions {
        drain: args.drain,
        ..LintOptions::default()
    };
    if let Some(p) = args.propagation {
        opts.propagation = p;
        opts.propagation_source = PropagationSource::Flag;
    }
    if let Some(dir) = &args.from_run {
        opts.propagation = lint::propagation_from_run(dir).map_err(|e| e.to_string())?;
        opts.propagation_source = PropagationSource::Run(dir.display().to_string());
    }
    Ok(opts)
}
