//! The command line: clap definitions and the mapping from library results to
//! exit codes. This is the only place (with `main.rs`) that uses `anyhow` and
//! clap; everything below it returns typed errors.

mod compare;
mod lint;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand, builder::TypedValueParser as _};

use rolltest_core::{ExitStatus, model::ProxyKind};

use crate::run::{self, LoadOptions, RunOptions};

/// rolltest: prove that a Deployment survives a rollout without dropping requests.
#[derive(Debug, Parser)]
#[command(name = "rolltest", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario: constant-rate load, verdict, run directory with report.
    ///
    /// Exit codes: 0 pass, 1 verdict failed, 2 bad input, 3 run error,
    /// 4 inconclusive (rate not held, or interrupted).
    Run(RunArgs),
    /// Ad hoc constant-rate HTTP load against one URL, no cluster.
    ///
    /// Writes the same run directory and summary as `run`. Without limits the
    /// verdict fails on any failed request.
    Load(LoadArgs),
    /// Rebuild report.html and summary.json from a run directory's saved files.
    Report(ReportArgs),
    /// Two run directories side by side (before/after): compare.html and compare.json.
    ///
    /// Exit codes: 0 written (evidence, not a gate), 2 bad input, 3 cannot write.
    Compare(compare::CompareArgs),
    /// The bundled demo app, with selectable startup, readiness and shutdown behaviour.
    Serve(serve::ServeArgs),
    /// Check Deployment/StatefulSet/PDB/Service manifests for the five rollout knobs.
    ///
    /// Exit codes: 0 no error finding, 1 an error finding, 2 bad input.
    Lint(lint::LintArgs),
    /// The embedded cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Run the embedded cluster in the foreground and write a kubeconfig for it.
    ///
    /// The API server speaks HTTPS with its own CA and accepts the admin client
    /// certificate (current context) or a bearer token (context `rolltest-embedded-token`).
    Up(ClusterUpArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClusterUpArgs {
    /// Where to write the kubeconfig.
    #[arg(long, default_value = "rolltest.kubeconfig")]
    pub kubeconfig: std::path::PathBuf,
    /// Number of nodes (embedded-node-1..N).
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Address of the API server (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Serve plain HTTP without authentication (debugging only).
    #[arg(long)]
    pub insecure_http: bool,
    /// How late a service proxy applies endpoint changes, like kube-proxy:
    /// MIN..MAX means a change reaches the proxy MIN after its write and the
    /// proxy syncs at most once per MAX-MIN, each sync applying every change
    /// pending then (a single duration: each change exactly that late). The
    /// default is kind's minSyncPeriod (1s) after ~40ms of delivery, as
    /// measured on a real cluster.
    #[arg(long, default_value = "40ms..1040ms")]
    pub endpoint_propagation: rolltest_minicluster::proxy::Propagation,
    /// Service proxy: l4 forwards TCP like kube-proxy (connections stay pinned;
    /// a dead backend resets), l7 proxies HTTP like an ingress (502/503),
    /// ingress-nginx is l7 with ingress-nginx's defaults (retries on error and
    /// timeout up to 3 tries, endpoint syncs at most every 3.3 s).
    #[arg(long, default_value = "l4", value_parser = proxy_parser())]
    pub proxy: ProxyKind,
    /// With --proxy l7: retry an idempotent request once on another endpoint
    /// after a connect error, like nginx's proxy_next_upstream.
    #[arg(long)]
    pub l7_retry: bool,
    /// How long each pod takes from its binding to a running container, like
    /// a real kubelet's sandbox, network and container start: MIN..MAX (each
    /// pod its own draw) or one duration ("0s": at once). The default is what
    /// scripts/realk8s measured with the image on the node.
    #[arg(long, default_value_t = rolltest_minicluster::kubelet::DEFAULT_POD_START)]
    pub pod_start: rolltest_minicluster::kubelet::PodStart,
}

/// `--proxy`: the core's [`ProxyKind`] names, each with its help line.
fn proxy_parser() -> impl clap::builder::TypedValueParser<Value = ProxyKind> {
    clap::builder::PossibleValuesParser::new(
        ProxyKind::ALL.map(|k| clap::builder::PossibleValue::new(k.as_str()).help(k.about())),
    )
    .try_map(|s| s.parse::<ProxyKind>())
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// Run directory to write (default: reports/NAME-UTCSTAMP/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Validate the scenario (and its files) without running anything.
    #[arg(long)]
    pub check: bool,
    /// Also write the result as JUnit XML to FILE (for CI test views); written
    /// whatever the verdict.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Kubeconfig file, like kubectl's --kubeconfig: replaces the scenario's
    /// `kubeconfig` (and $KUBECONFIG). A relative FILE is relative to the
    /// current directory, unlike the scenario's key (relative to the scenario
    /// file). The scenario's `context` still applies unless --context is given.
    /// An embedded scenario runs on this cluster instead (mode kubeconfig, the
    /// same manifests); its [target] then needs a `url`.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context, like kubectl's --context: replaces the scenario's
    /// `context` (default: the kubeconfig's current context). An embedded
    /// scenario runs on this cluster instead, through $KUBECONFIG (else
    /// ~/.kube/config) unless --kubeconfig is given; its [target] then needs a
    /// `url`.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace for the manifests and the watches, like kubectl's -n:
    /// replaces the scenario's `namespace`, in either mode (default: the
    /// context's, else "default").
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Target URL (http://, loopback or any host you own).
    pub url: String,
    /// Requests per second (constant arrival rate, open model).
    #[arg(long, short)]
    pub rate: f64,
    /// How long to send, e.g. 500ms, 30s, 2m.
    #[arg(long, short)]
    pub duration: String,
    /// Per-request timeout, counted from the moment the request is sent.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
    /// Most requests in flight at once; a request due when this many are in
    /// flight is recorded as dropped (the run becomes inconclusive).
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// HTTP method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    pub body: Option<String>,
    /// Open a new connection for every request instead of reusing keep-alive connections.
    #[arg(long)]
    pub no_keepalive: bool,
    /// Close a pooled keep-alive connection that stayed idle longer than
    /// this instead of reusing it, as Go's IdleConnTimeout and browsers do;
    /// below the server's keep-alive timeout it avoids the keep-alive race.
    /// Default: reuse connections however long they were idle.
    #[arg(long, value_name = "D")]
    pub idle_timeout: Option<String>,
    /// Requests closer together than this leave in small groups, each request
    /// at most this late; larger values cost less CPU per request at high
    /// rates. Default: 100us up to 10k req/s, 200us above.
    #[arg(long)]
    pub send_quantum: Option<String>,
    /// Fail the verdict when more than this many requests failed (default 0).
    #[arg(long)]
    pub max_failed: Option<u64>,
    /// Fail the verdict when the p99 latency (from the scheduled time) exceeds this, in ms.
    #[arg(long)]
    pub max_p99_ms: Option<f64>,
    /// Run directory to write (default: reports/load-UTCSTAMP/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write the result as JUnit XML to FILE (for CI test views); written
    /// whatever the verdict.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run directory written by `rolltest run` or `rolltest load`.
    pub run_dir: PathBuf,
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> u8 {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitStatus::RunError.code()
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let status = match cli.command {
        Command::Run(args) => run::run_scenario(RunOptions {
            scenario: args.scenario,
            out: args.out,
            quiet: args.quiet,
            check_only: args.check,
            junit: args.junit,
            overrides: crate::scenario::ClusterOverrides {
                kubeconfig: args.kubeconfig,
                context: args.context,
                namespace: args.namespace,
            },
        }),
        Command::Load(args) => run::run_load(LoadOptions {
            url: args.url,
            rate: args.rate,
            duration: args.duration,
            timeout: args.timeout,
            max_in_flight: args.max_in_flight,
            method: args.method,
            headers: args.headers,
            body: args.body,
            keepalive: !args.no_keepalive,
            idle_timeout: args.idle_timeout,
            send_quantum: args.send_quantum,
            max_failed: args.max_failed,
            max_p99_ms: args.max_p99_ms,
            out: args.out,
            quiet: args.quiet,
            junit: args.junit,
        }),
        Command::Report(args) => run::rebuild_report(&args.run_dir),
        Command::Serve(args) => return serve::run(args),
        Command::Lint(args) => return Ok(lint::run(args)),
        Command::Compare(args) => return Ok(compare::run(args)),
        Command::Cluster(ClusterCommand::Up(args)) => {
            let opts = crate::cluster_up::ClusterUpOptions {
                kubeconfig: args.kubeconfig,
                nodes: args.nodes,
                listen: args.listen,
                insecure_http: args.insecure_http,
                proxy: crate::scenario::cluster::cluster_proxy(args.proxy, args.l7_retry),
                propagation: args.endpoint_propagation,
                pod_start: args.pod_start,
            };
            return Ok(match crate::cluster_up::cluster_up(&opts) {
                Ok(status) => status.code(),
                Err(err) => {
                    eprintln!("error: {err}");
                    err.exit_status().code()
                }
            });
        }
    };
    Ok(report_outcome(status))
}

/// Prints an error (if any) and turns a command's outcome into its exit code.
fn report_outcome(result: Result<ExitStatus, run::RunError>) -> u8 {
    match result {
        Ok(status) => status.code(),
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            err.exit_status().code()
        }
    }
}
