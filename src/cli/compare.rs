//! `rolltest compare` flags and the command: two run directories side by
//! side, written as compare.html and compare.json.

use std::path::PathBuf;

use rolltest_core::ExitStatus;

use crate::compare::{self, CompareOptions};

/// Shown after the flags in `rolltest compare --help`.
const AFTER_HELP: &str = "\
Puts two runs side by side on time axes aligned at each run's first action
(its load start when it has none): failures by cause and over time, latency
percentiles, requests and verdicts, endpoint propagation, pod termination
timings (deletion → preStop → SIGTERM → exit), the manifests' knob changes
and the lint findings that disappeared or appeared, then one conclusion line.

Writes compare.html (self-contained) and compare.json into --out, default
reports/compare-<BEFORE name>-vs-<AFTER name>/, and prints the conclusion.

Exit codes: 0 the comparison was written (compare is evidence, not a gate:
it is 0 even when AFTER is worse), 2 bad input (not a run directory, an
unreadable summary or manifest, runs of different rates or durations without
--force), 3 the output could not be written.";

/// Flags of `rolltest compare`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct CompareArgs {
    /// The run directory before the change.
    #[arg(value_name = "BEFORE_DIR")]
    pub before: PathBuf,
    /// The run directory after the change.
    #[arg(value_name = "AFTER_DIR")]
    pub after: PathBuf,
    /// Output directory (default: reports/compare-BEFORE-vs-AFTER/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Compare runs whose rate or duration differ.
    #[arg(long)]
    pub force: bool,
}

/// Runs `rolltest compare` and returns the exit code.
pub fn run(args: CompareArgs) -> u8 {
    let opts = CompareOptions {
        before: args.before,
        after: args.after,
        out: args.out,
        force: args.force,
    };
    match compare::run(&opts) {
        Ok(outcome) => {
            for m in &outcome.comparison.mismatches {
                eprintln!("warning: compared with --force: {m}");
            }
            println!("{}", outcome.comparison.conclusion);
            println!(
                "compare: {}",
                outcome.out_dir.join(compare::HTML_FILE).display()
            );
            ExitStatus::Pass.code()
        }
        Err(err) => {
            eprintln!("error: {err}");
            err.exit_status().code()
        }
    }
}
