//! The report's sections, each returned as an HTML fragment. Data strings
//! (scenario, target, pods, check names, reasons) go through `escape` or an
//! escaping [`Table`] cell.

use rolltest_core::{
    model::ErrorKind,
    summary::{Aggregate, RunFacts, Summary},
    verdict::{CheckKind, Verdict},
};

use crate::html::{
    Cell, Table, escape, fmt_dec, fmt_ms, fmt_num, fmt_opt, fmt_pct, legend, note, num, text,
};

use super::{
    charts,
    series::{self, MAX_HISTOGRAM_BINS, Series},
};

/// Duration asked, µs (for chart x ranges).
pub(super) fn duration_us(facts: &RunFacts) -> u64 {
    if facts.duration_s.is_finite() && facts.duration_s > 0.0 {
        (facts.duration_s * 1e6).round() as u64
    } else {
        0
    }
}

fn ms_width(us: u64) -> String {
    format!("{} ms", fmt_num(us as f64 / 1000.0))
}

fn legend_of(series: &[Series]) -> String {
    let items: Vec<_> = series.iter().map(|s| (s.label.clone(), s.color)).collect();
    legend(&items)
}

/// The verdict banner (with a one-line explanation when given), the
/// inconclusive reasons and the checks table.
pub fn verdict(summary: &Summary, headline: Option<&str>) -> String {
    let class = summary.verdict.as_str();
    let headline = headline.map_or_else(String::new, |h| {
        format!("<p class=\"headline\">{}</p>\n", escape(h))
    });
    let mut out = format!(
        "<section class=\"banner {class}\">\n<div class=\"v\">{}</div>\n{headline}<dl>\
         <dt>scenario</dt><dd>{}</dd><dt>target</dt><dd>{}</dd><dt>started</dt><dd>{}</dd></dl>\n</section>\n",
        class.to_uppercase(),
        escape(&summary.scenario),
        escape(&summary.target),
        escape(&summary.started_at),
    );
    if summary.verdict == Verdict::Inconclusive {
        out.push_str(
            "<div class=\"reasons\"><strong>Inconclusive: the run proves nothing, because</strong><ul>\n",
        );
        if summary.inconclusive_reasons.is_empty() {
            out.push_str("<li>a generator check failed</li>\n");
        }
        for r in &summary.inconclusive_reasons {
            out.push_str(&format!("<li>{}</li>\n", escape(r)));
        }
        out.push_str("</ul></div>\n");
    }
    out.push_str("<h2>Checks</h2>\n");
    let mut t = Table::new(&["check", "kind", ">limit", ">actual", "pass"]);
    for c in &summary.checks {
        let kind = match c.kind {
            CheckKind::Target => "target",
            CheckKind::Generator => "generator",
        };
        let cmp = if c.name.starts_with("min_") {
            "≥"
        } else {
            "≤"
        };
        let mark = if c.pass {
            Cell::Html("<span class=\"ok\">✓</span>".into())
        } else {
            Cell::Html("<span class=\"bad\">✗</span>".into())
        };
        t.row(vec![
            text(&c.name),
            text(kind),
            num(format!("{cmp} {}", fmt_num(c.limit))),
            num(fmt_opt(c.actual)),
            mark,
        ]);
    }
    if t.is_empty() {
        out.push_str(&note("no checks were configured"));
    } else {
        out.push_str(&t.render("checks"));
        out.push_str(
            "<p class=\"note\">A failed target check fails the run; a failed generator check \
             makes it inconclusive.</p>\n",
        );
    }
    out
}

/// 2. Throughput over time.
pub fn throughput(agg: &Aggregate, facts: &RunFacts) -> String {
    let mut out = String::from("<h2>Throughput over time</h2>\n");
    let Some(t) = series::throughput(agg, duration_us(facts)) else {
        out.push_str(&note("no requests were scheduled"));
        return out;
    };
    let width = if t.factor > 1 {
        format!(
            "{} buckets ({} adjacent 100 ms buckets merged to keep the chart small)",
            ms_width(t.bucket_us),
            t.factor
        )
    } else {
        format!("{} buckets", ms_width(t.bucket_us))
    };
    out.push_str("<figure>\n");
    out.push_str(&legend_of(&t.series));
    out.push_str(&charts::throughput(&t));
    out.push_str(&format!(
        "<figcaption>Requests per second by scheduled send time, in {width}. \
         Overlaid lines, not stacked: each series is measured from zero; error and \
         dropped lines are drawn only where they are above zero. \
         x axis: seconds since the load started.</figcaption>\n</figure>\n"
    ));
    if agg.failed == 0 {
        out.push_str(&note("no failed requests"));
    }
    out
}

/// 3. Latency percentiles over time.
pub fn latency_over_time(agg: &Aggregate, facts: &RunFacts) -> String {
    let mut out = String::from("<h2>Latency over time</h2>\n");
    let Some(l) = series::latency_over_time(agg, duration_us(facts)) else {
        out.push_str(&note("no successful requests"));
        return out;
    };
    out.push_str("<figure>\n");
    out.push_str(&legend_of(&l.series));
    out.push_str(&charts::latency_over_time(&l));
    let sparse = if l.per_bucket < 100 {
        format!(
            " Buckets hold about {} successful requests each, so p99 is often the bucket's \
             max (the p99 line is drawn over the max line).",
            l.per_bucket
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "<figcaption>max, p99 and p50 latency of successful requests per {} bucket of \
         scheduled send time, in ms on a logarithmic y axis. Latency counts from the \
         scheduled time, so generator lag is included. Gaps: buckets without a successful \
         request. x axis: seconds since the load started.{sparse}</figcaption>\n</figure>\n",
        ms_width(l.bucket_us)
    ));
    out
}

/// 4. Latency histogram and percentile table.
pub fn latency_histogram(summary: &Summary, agg: &Aggregate) -> String {
    let mut out = String::from("<h2>Latency distribution</h2>\n");
    let bins = series::histogram_bins(&agg.latency, MAX_HISTOGRAM_BINS);
    if bins.is_empty() {
        out.push_str(&note("no successful requests"));
        return out;
    }
    let (lo, hi) = (
        bins.first().map_or(0, |b| b.lo_us),
        bins.last().map_or(0, |b| b.hi_us),
    );
    out.push_str("<figure>\n");
    out.push_str(&charts::histogram(&bins));
    out.push_str(&format!(
        "<figcaption>{} successful requests by latency, in {} log-spaced bins from {} to {}; \
         log x axis (ms), log y axis (requests), so a small tail stays visible.</figcaption>\n</figure>\n",
        agg.latency.len(),
        bins.len(),
        ms_width(lo),
        ms_width(hi)
    ));
    let l = &summary.latency_ms;
    let mut t = Table::new(&["percentile", ">latency"]);
    for (name, v) in [
        ("p50", l.p50),
        ("p90", l.p90),
        ("p99", l.p99),
        ("p99.9", l.p999),
        ("max", l.max),
    ] {
        t.row(vec![text(name), num(fmt_ms(v))]);
    }
    out.push_str(&t.render("pct"));
    out
}

/// 5. Errors by kind, cause and status; requests per pod.
pub fn errors(summary: &Summary, agg: &Aggregate) -> String {
    let sent = summary.requests.sent;
    let mut out = String::from("<h2>Errors</h2>\n");
    if summary.requests.failed == 0 {
        out.push_str(&note("no failed requests"));
    } else {
        out.push_str("<div class=\"cols\">\n<div>\n<h3>By kind</h3>\n");
        let mut t = Table::new(&["kind", ">count", ">share of sent"]);
        for kind in ErrorKind::ALL {
            let n = agg.errors_by_kind[kind.index()];
            if n > 0 {
                t.row(vec![
                    text(kind.as_str()),
                    num(n.to_string()),
                    num(fmt_pct(n, sent)),
                ]);
            }
        }
        let failed = summary.requests.failed;
        t.row(vec![
            Cell::Html("<strong>all failed</strong>".into()),
            num(failed.to_string()),
            num(fmt_pct(failed, sent)),
        ]);
        out.push_str(&t.render("kinds"));
        out.push_str("</div>\n");
        if !summary.errors_by_cause.is_empty() {
            out.push_str("<div>\n<h3>By attributed cause</h3>\n");
            let mut t = Table::new(&["cause", ">count", ">share of failed"]);
            for (cause, n) in &summary.errors_by_cause {
                t.row(vec![
                    text(cause),
                    num(n.to_string()),
                    num(fmt_pct(*n, failed)),
                ]);
            }
            out.push_str(&t.render("causes"));
            out.push_str("</div>\n");
        }
        out.push_str("</div>\n");
    }
    if summary.requests.dropped > 0 {
        out.push_str(&note(&format!(
            "{} requests were dropped by the generator (never sent; {} of scheduled).",
            summary.requests.dropped,
            fmt_pct(summary.requests.dropped, summary.requests.scheduled)
        )));
    }
    out.push_str("<div class=\"cols\">\n<div>\n<h3>Responses by HTTP status</h3>\n");
    if summary.status_codes.is_empty() {
        out.push_str(&note("no HTTP responses"));
    } else {
        let mut t = Table::new(&["status", ">count", ">share of sent"]);
        for (code, n) in &agg.status_codes {
            t.row(vec![
                text(code.to_string()),
                num(n.to_string()),
                num(fmt_pct(*n, sent)),
            ]);
        }
        out.push_str(&t.render("status"));
    }
    out.push_str("</div>\n<div>\n<h3>Requests by pod</h3>\n");
    if summary.pods.is_empty() {
        out.push_str(&note(
            "pods unknown (no x-rolltest-pod header or proxy record)",
        ));
    } else {
        let mut t = Table::new(&["pod", ">ok", ">failed", ">share of sent"]);
        for (pod, c) in &summary.pods {
            t.row(vec![
                text(pod),
                num(c.ok.to_string()),
                num(c.failed.to_string()),
                num(fmt_pct(c.ok + c.failed, sent)),
            ]);
        }
        out.push_str(&t.render("pods"));
    }
    out.push_str("</div>\n</div>\n");
    out
}

/// 6. Run facts.
pub fn run_facts(summary: &Summary, facts: &RunFacts) -> String {
    let r = &summary.requests;
    let lag = &summary.schedule_lag_ms;
    let span_s = facts.ended_us.saturating_sub(facts.load_started_us) as f64 / 1e6;
    let rows: Vec<(&str, String)> = vec![
        ("rate asked", format!("{} req/s", fmt_num(summary.rate))),
        (
            "rate achieved",
            format!(
                "{} req/s (ratio {})",
                fmt_dec(summary.achieved_rate, 3),
                fmt_num(summary.achieved_ratio)
            ),
        ),
        (
            "duration asked",
            format!("{} s", fmt_num(summary.duration_s)),
        ),
        (
            "load ran",
            format!(
                "{} s (run clock {} s → {} s)",
                fmt_num(span_s),
                fmt_num(facts.load_started_us as f64 / 1e6),
                fmt_num(facts.ended_us as f64 / 1e6)
            ),
        ),
        (
            "interrupted",
            if summary.interrupted { "yes" } else { "no" }.into(),
        ),
        ("scheduled", r.scheduled.to_string()),
        ("sent", r.sent.to_string()),
        ("ok", r.ok.to_string()),
        (
            "failed",
            format!("{} ({} of sent)", r.failed, fmt_pct(r.failed, r.sent)),
        ),
        (
            "dropped",
            format!(
                "{} ({} of scheduled)",
                r.dropped,
                fmt_pct(r.dropped, r.scheduled)
            ),
        ),
        (
            "schedule lag p50 / p99 / max",
            format!(
                "{} / {} / {}",
                fmt_ms(lag.p50),
                fmt_ms(lag.p99),
                fmt_ms(lag.max)
            ),
        ),
        ("connections opened", summary.connections.to_string()),
        ("rolltest version", summary.rolltest_version.clone()),
    ];
    let mut t = Table::new(&["fact", "value"]);
    for (k, v) in rows {
        t.row(vec![text(k), text(v)]);
    }
    format!("<h2>Run facts</h2>\n{}", t.render("facts"))
}
