//! The HTML kit of rolltest's pages (report.html and compare.html): escaping,
//! stable number formatting, tables, legends, colours, the inline
//! stylesheets, and (in [`palette`]) the cause palette. Both pages build from
//! here and nothing here knows either page.
//!
//! Everything here is deterministic: numbers are formatted with fixed rules
//! (no locale, no shortest-float surprises), so the same input always gives
//! the same bytes.

pub mod palette;

/// An sRGB colour.
pub type Rgb = (u8, u8, u8);

/// A colour as CSS/SVG hex, `#rrggbb`.
pub fn hex((r, g, b): Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Escapes text for HTML element content and quoted attribute values (and
/// for SVG `<text>`, which follows the same XML rules).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Formats a number for people: whole numbers without decimals, others with
/// a precision that depends on the magnitude, trailing zeros trimmed.
/// Non-finite values become `n/a`.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let a = v.abs();
    let places = if a >= 100.0 {
        1
    } else if a >= 1.0 {
        3
    } else {
        6
    };
    fmt_dec(v, places)
}

/// A number with at most `places` decimals, trailing zeros trimmed.
pub fn fmt_dec(v: f64, places: usize) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let s = format!("{v:.places$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" { "0".into() } else { s.into() }
}

/// `fmt_num` of a value, or `n/a`.
pub fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), fmt_num)
}

/// A millisecond figure with its unit, or `n/a`.
pub fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{} ms", fmt_num(v)))
}

/// `part` as a percentage of `whole`, two decimals; `–` when `whole` is zero.
pub fn fmt_pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "–".into();
    }
    format!("{:.2}%", part as f64 * 100.0 / whole as f64)
}

/// One table cell.
#[derive(Debug, Clone)]
pub enum Cell {
    /// Text from anywhere (escaped when rendered), left-aligned.
    Text(String),
    /// A figure (escaped when rendered), right-aligned.
    Num(String),
    /// Trusted markup built by this module's callers (never data), as is.
    Html(String),
}

/// Shorthand for [`Cell::Text`].
pub fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

/// Shorthand for [`Cell::Num`].
pub fn num(s: impl Into<String>) -> Cell {
    Cell::Num(s.into())
}

/// A simple HTML table: a header row and data rows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    head: Vec<(String, bool)>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is a
    /// right-aligned (numeric) column, the `>` is not shown.
    pub fn new(head: &[&str]) -> Self {
        Table {
            head: head
                .iter()
                .map(|h| match h.strip_prefix('>') {
                    Some(rest) => (rest.to_string(), true),
                    None => (h.to_string(), false),
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<Cell>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table's markup, with a class on the `<table>`.
    pub fn render(&self, class: &str) -> String {
        let mut out = format!("<table class=\"{}\">\n<thead><tr>", escape(class));
        for (h, right) in &self.head {
            let cls = if *right { " class=\"n\"" } else { "" };
            out.push_str(&format!("<th{cls}>{}</th>", escape(h)));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for row in &self.rows {
            out.push_str("<tr>");
            for cell in row {
                match cell {
                    Cell::Text(s) => out.push_str(&format!("<td>{}</td>", escape(s))),
                    Cell::Num(s) => out.push_str(&format!("<td class=\"n\">{}</td>", escape(s))),
                    Cell::Html(s) => out.push_str(&format!("<td>{s}</td>")),
                }
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table>\n");
        out
    }
}

/// A legend: colour swatches with escaped labels, as an HTML list.
pub fn legend(items: &[(String, Rgb)]) -> String {
    let mut out = String::from("<ul class=\"legend\">");
    for (label, (r, g, b)) in items {
        out.push_str(&format!(
            "<li><span class=\"sw\" style=\"background:#{r:02x}{g:02x}{b:02x}\"></span>{}</li>",
            escape(label)
        ));
    }
    out.push_str("</ul>\n");
    out
}

/// A muted one-line note (escaped).
pub fn note(s: &str) -> String {
    format!("<p class=\"note\">{}</p>\n", escape(s))
}

/// The inline stylesheet. Only local font names: nothing is fetched.
pub const CSS: &str = r#"
:root{--pass:#1b7f3b;--fail:#c62828;--inc:#b26a00;--ink:#1f2328;--mute:#59636e;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:#fff}
main{max-width:1080px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:16px 0 6px}
.banner{border-radius:8px;padding:14px 18px;color:#fff;margin-bottom:12px}
.banner.pass{background:var(--pass)}.banner.fail{background:var(--fail)}.banner.inconclusive{background:var(--inc)}
.banner .v{font-size:28px;font-weight:700;letter-spacing:.04em}
.banner dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0 0}
.banner dt{opacity:.85}.banner dd{margin:0;word-break:break-all;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.reasons{border-left:4px solid var(--inc);background:#fff8e6;padding:8px 14px;margin:8px 0}
.reasons ul{margin:4px 0;padding-left:20px}
table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:3px 10px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}
td.n,th.n{text-align:right}
td{word-break:break-word}
.ok{color:var(--pass);font-weight:700}.bad{color:var(--fail);font-weight:700}
figure{margin:8px 0 16px}
figure svg{display:block;width:100%;max-width:1000px;height:auto;border:1px solid var(--line);border-radius:4px}
figcaption{color:var(--mute);font-size:13px;margin-top:4px}
.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 18px;font-size:13px}
.legend .sw{display:inline-block;width:14px;height:4px;margin-right:6px;vertical-align:middle;border-radius:2px}
.note{color:var(--mute);font-style:italic;margin:6px 0}
.cols{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start}
footer{margin-top:32px;color:var(--mute);font-size:12px}
"#;

/// The styles of the rollout evidence: the headline, the swimlanes' legend,
/// cause chips, the evidence and findings tables (report.html's rollout
/// sections; compare.html shows chips and findings too).
pub const EVIDENCE_CSS: &str = r#"
.banner .headline{font-size:16px;font-weight:600;margin:2px 0 0}
.legend .bar{display:inline-block;width:14px;height:10px;margin-right:6px;vertical-align:middle;border-radius:2px}
.legend svg{display:inline-block;width:8px;height:16px;border:0;margin-right:6px;vertical-align:middle}.legend svg.wide{width:16px}
figure svg.lanes{max-width:1000px}
.chip{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px;vertical-align:baseline}
table.evidence td:nth-child(5),table.evidence td:nth-child(6){min-width:220px}
table.evidence td:nth-child(-n+4),table.causes td:nth-child(-n+4),table.findings td:nth-child(-n+3){white-space:nowrap}
.sev-error{color:var(--fail);font-weight:700}.sev-warning{color:var(--inc);font-weight:700}.sev-info{color:var(--mute)}
.where,.why{color:var(--mute);font-size:12px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(escape("plain-name_1"), "plain-name_1");
        assert_eq!(
            escape(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        // Already-escaped text is escaped again (we never trust data).
        assert_eq!(escape("&lt;"), "&amp;lt;");
        // Non-ASCII passes through.
        assert_eq!(escape("pod-é✓"), "pod-é✓");
    }

    #[test]
    fn escape_is_safe_inside_svg_text_and_attributes() {
        let evil = r#"</text><script>x</script><text a="1" b='2'>"#;
        let svg = format!("<svg><text>{}</text></svg>", escape(evil));
        // The only tags left are the ones we wrote.
        assert_eq!(svg.matches('<').count(), 4);
        assert!(!svg.contains("<script"));
        let attr = format!("<text data-x=\"{}\">", escape(evil));
        assert_eq!(attr.matches('"').count(), 2);
    }

    #[test]
    fn numbers_format_stably() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(-0.0), "0");
        assert_eq!(fmt_num(200.0), "200");
        assert_eq!(fmt_num(199.987), "200");
        assert_eq!(fmt_num(12.3456), "12.346");
        assert_eq!(fmt_num(0.999), "0.999");
        assert_eq!(fmt_num(0.0123456789), "0.012346");
        assert_eq!(fmt_num(1.5), "1.5");
        assert_eq!(fmt_num(f64::NAN), "n/a");
        assert_eq!(fmt_dec(199.668, 3), "199.668");
        assert_eq!(fmt_dec(200.0, 3), "200");
        assert_eq!(fmt_dec(1000.0, 0), "1000");
        assert_eq!(fmt_dec(-0.0001, 2), "0");
        assert_eq!(fmt_ms(None), "n/a");
        assert_eq!(fmt_ms(Some(2.5)), "2.5 ms");
        assert_eq!(fmt_pct(1, 3), "33.33%");
        assert_eq!(fmt_pct(1, 0), "–");
    }

    #[test]
    fn table_escapes_cells_and_aligns_numbers() {
        let mut t = Table::new(&["pod", ">ok"]);
        t.row(vec![text("<b>"), num("5")]);
        let html = t.render("t");
        assert!(html.contains("<td>&lt;b&gt;</td>"));
        assert!(html.contains("<th class=\"n\">ok</th>"));
        assert!(html.contains("<td class=\"n\">5</td>"));
    }
}
