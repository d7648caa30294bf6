//! The one-line conclusion: the failed-request change, then for each cause
//! that changed, the knobs known to fix that cause and that did change.
//!
//! Which knobs fix which cause is [`Knob::for_cause`]'s (the core's `knobs`
//! module, which also writes the correlator's fix texts).

use rolltest_core::model::Cause;

use crate::{
    html::fmt_num,
    manifest::knobs::{Knob, on_sigterm, pre_stop_seconds},
};

use super::{CauseDelta, Comparison, knobs::KnobDiff};

fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// A changed knob in a few words, as the conclusion names it.
pub fn phrase(d: &KnobDiff) -> String {
    match d.knob {
        Knob::PreStop => match pre_stop_seconds(&d.after) {
            Some(s) => format!("preStop sleep {} s", fmt_num(s)),
            None if d.after.is_null() => "removing the preStop hook".into(),
            None => format!("preStop {}", d.after_text),
        },
        Knob::GracePeriod => format!("terminationGracePeriodSeconds {}", d.after_text),
        Knob::App if leaf(&d.path) == "args" => {
            let (b, a) = (on_sigterm(&d.before), on_sigterm(&d.after));
            match a {
                Some(mode) if b.as_ref() != Some(&mode) => {
                    if mode == "drain" {
                        "draining on SIGTERM".into()
                    } else {
                        format!("--on-sigterm {mode}")
                    }
                }
                _ => format!("args {}", d.after_text),
            }
        }
        Knob::Pdb if d.path == "(object)" => {
            if d.after.is_null() {
                "removing the PodDisruptionBudget".into()
            } else {
                format!("a PodDisruptionBudget ({})", d.after_text)
            }
        }
        Knob::Probes if d.after.is_null() => format!("removing the {}", leaf(&d.path)),
        Knob::Probes if d.before.is_null() => format!("a {}", leaf(&d.path)),
        Knob::Probes => {
            let probe = d.path.rsplit('.').nth(1).unwrap_or("probe");
            format!("{probe} {} {}", leaf(&d.path), d.after_text)
        }
        _ => format!("{} {}", leaf(&d.path), d.after_text),
    }
}

/// "a", "a and b", "a, b and c".
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The knob changes that could explain a change of `cause`.
fn related(cause: Cause, knobs: &[KnobDiff]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in knobs.iter().filter(|d| d.effective) {
        if !Knob::for_cause(cause).contains(&d.knob) {
            continue;
        }
        // not_ready is about readiness; liveness does not decide routing.
        if cause == Cause::NotReady && d.path.contains("livenessProbe") {
            continue;
        }
        let p = phrase(d);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The conclusion line of a comparison.
pub fn conclude(c: &Comparison) -> String {
    let (bf, af) = (c.before.requests.failed, c.after.requests.failed);
    let mut parts = Vec::new();
    parts.push(if af > bf {
        format!("worse: failed requests {bf} → {af}")
    } else {
        format!("failed requests {bf} → {af}")
    });
    for d in &c.failures_by_cause {
        let CauseDelta {
            cause,
            before,
            after,
            ..
        } = d;
        if before == after {
            continue;
        }
        let knobs = Cause::parse(cause).map_or_else(Vec::new, |k| related(k, &c.knobs));
        let by = |verb: &str| {
            if knobs.is_empty() {
                String::new()
            } else {
                format!(" {verb} {}", join(&knobs))
            }
        };
        parts.push(if *after == 0 {
            if knobs.is_empty() {
                format!("{cause} eliminated (no knob that fixes it changed)")
            } else {
                format!("{cause} eliminated{}", by("by"))
            }
        } else if after > before {
            format!("{cause} worse {before} → {after}{}", by("after"))
        } else {
            format!("{cause} {before} → {after}{}", by("with"))
        });
    }
    if bf == 0 && af == 0 {
        parts.push("no failed request in either run".into());
    }
    if let (Some(b), Some(a)) = (c.before.latency_ms.p99, c.after.latency_ms.p99)
        && (a - b).abs() > 5.0
        && (a > b * 1.5 || a < b / 1.5)
    {
        parts.push(format!(
            "p99 latency {} → {} ms",
            fmt_num(b.round()),
            fmt_num(a.round())
        ));
    }
    if c.before.verdict != c.after.verdict {
        parts.push(format!(
            "verdict {} → {}",
            c.before.verdict, c.after.verdict
        ));
    }
    parts.join("; ")
}
