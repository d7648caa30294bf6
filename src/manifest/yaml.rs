//! YAML text → JSON values with the line of every field, read the way
//! Kubernetes reads it.
//!
//! `kubectl` and the API server read manifests through `sigs.k8s.io/yaml`:
//! go-yaml v2 (YAML 1.1-ish) first, then JSON. So plain scalars resolve with
//! go-yaml v2's table (`yes`/`on`/`off` are booleans, `0755` is octal, `1_000`
//! is 1000, integral floats become integers), quoted and block scalars stay
//! strings, merge keys (`<<`) and aliases are expanded, and mapping keys become
//! strings. A duplicate key is an error, as with kubectl's default strict field
//! validation.
//!
//! The parser is `granit-parser` (the event parser under serde-saphyr, already in
//! the dependency tree through kube-client): its events carry source spans,
//! which serde-based YAML crates throw away.

use std::collections::{BTreeMap, HashMap, HashSet};

use granit_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput};
use serde_json::{Map, Number, Value};

/// A parse failure at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl YamlError {
    fn at(span: &Span, message: impl Into<String>) -> Self {
        YamlError {
            line: span.start.line(),
            column: span.start.col() + 1,
            message: message.into(),
        }
    }
}

impl From<ScanError> for YamlError {
    fn from(e: ScanError) -> Self {
        YamlError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info(),
        }
    }
}

/// One YAML document of a stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Document {
    /// 0-based index in the stream (empty documents count).
    pub index: usize,
    /// The document as JSON (`Null` for an empty document).
    pub value: Value,
    /// Field path → 1-based line (`""` is the document's root).
    pub positions: BTreeMap<String, usize>,
}

/// Parses every document of a YAML stream.
pub(crate) fn parse_stream(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut builder = Builder {
        // Comments are not data; the `comments` feature is on through serde-saphyr.
        parser: Parser::new_from_str_with_options(
            text,
            granit_parser::options! { emit_comments: false },
        ),
        anchors: HashMap::new(),
        positions: BTreeMap::new(),
        last: None,
    };
    let mut docs = Vec::new();
    loop {
        let (event, span) = builder.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                builder.anchors.clear();
                builder.positions.clear();
                let (event, span) = builder.next()?;
                let value = if matches!(event, Event::DocumentEnd) {
                    Value::Null
                } else {
                    builder.node(event, span, "")?
                };
                docs.push(Document {
                    index: docs.len(),
                    value,
                    positions: std::mem::take(&mut builder.positions),
                });
            }
            _ => {
                return Err(YamlError::at(
                    &span,
                    "unexpected YAML event outside a document",
                ));
            }
        }
    }
    Ok(docs)
}

struct Builder<'a> {
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, Value>,
    positions: BTreeMap<String, usize>,
    last: Option<Span>,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        loop {
            match self.parser.next() {
                Some(Ok((Event::Anchor(..), _))) => continue,
                Some(Ok((event, span))) => {
                    self.last = Some(span);
                    return Ok((event, span));
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    let span = self.last.unwrap_or_default();
                    return Err(YamlError::at(&span, "unexpected end of the YAML stream"));
                }
            }
        }
    }

    fn node(&mut self, event: Event<'a>, span: Span, path: &str) -> Result<Value, YamlError> {
        self.positions.insert(path.to_owned(), span.start.line());
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| (t.handle().to_owned(), t.suffix().to_owned()));
                let value = resolve_scalar(&text, style, tag.as_ref())
                    .map_err(|m| YamlError::at(&span, m))?;
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                Ok(value)
            }
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let child = format!("{path}[{}]", items.len());
                    items.push(self.node(event, span, &child)?);
                }
                let value = Value::Array(items);
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                Ok(value)
            }
            Event::MappingStart(_, anchor, _) => {
                let value = Value::Object(self.mapping(path)?);
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                Ok(value)
            }
            Event::Alias(id) => self
                .anchors
                .get(&id)
                .cloned()
                .ok_or_else(|| YamlError::at(&span, "alias to an unknown anchor")),
            _ => Err(YamlError::at(
                &span,
                "unexpected YAML event where a value belongs",
            )),
        }
    }

    fn mapping(&mut self, path: &str) -> Result<Map<String, Value>, YamlError> {
        let mut map = Map::new();
        let mut explicit: HashSet<String> = HashSet::new();
        let mut merged: Vec<Map<String, Value>> = Vec::new();
        loop {
            let (event, key_span) = self.next()?;
            let (key, is_merge) = match event {
                Event::MappingEnd => break,
                Event::Scalar(text, style, _, tag) => {
                    let is_merge = text == "<<" && style == ScalarStyle::Plain && tag.is_none();
                    let tag = tag.map(|t| (t.handle().to_owned(), t.suffix().to_owned()));
                    let key = resolve_scalar(&text, style, tag.as_ref())
                        .map_err(|m| YamlError::at(&key_span, m))?;
                    (key_string(&key), is_merge)
                }
                Event::Alias(id) => match self.anchors.get(&id) {
                    Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                        (key_string(v), false)
                    }
                    _ => return Err(YamlError::at(&key_span, "unsupported mapping key")),
                },
                _ => {
                    return Err(YamlError::at(
                        &key_span,
                        "unsupported mapping key (only scalar keys are allowed)",
                    ));
                }
            };
            let (event, span) = self.next()?;
            if is_merge {
                // Positions inside merged maps stay with their anchor's lines;
                // the merge key's fields fall back to the `<<` line.
                let saved = std::mem::take(&mut self.positions);
                let value = self.node(event, span, "")?;
                self.positions = saved;
                match value {
                    Value::Object(m) => merged.push(m),
                    Value::Array(items) => {
                        for item in items {
                            match item {
                                Value::Object(m) => merged.push(m),
                                _ => {
                                    return Err(YamlError::at(
                                        &key_span,
                                        "a merge key (<<) takes a mapping or a list of mappings",
                                    ));
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(YamlError::at(
                            &key_span,
                            "a merge key (<<) takes a mapping or a list of mappings",
                        ));
                    }
                }
                continue;
            }
            if !explicit.insert(key.clone()) {
                return Err(YamlError::at(
                    &key_span,
                    format!("duplicate key {key:?} in the same mapping"),
                ));
            }
            let child = join(path, &key);
            let value = self.node(event, span, &child)?;
            // A field's line is its key's line (a nested mapping starts below it).
            self.positions.insert(child, key_span.start.line());
            map.insert(key, value);
        }
        for m in merged {
            for (k, v) in m {
                if !map.contains_key(&k) {
                    map.insert(k, v);
                }
            }
        }
        Ok(map)
    }
}

/// `path` + `.key`, or `["key"]` when the key would make the path ambiguous.
pub(crate) fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '$'));
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", Value::String(key.to_owned())),
    }
}

fn key_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const CORE: &str = "tag:yaml.org,2002:";

/// One scalar as go-yaml v2 + sigs.k8s.io/yaml would make it.
fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&(String, String)>,
) -> Result<Value, String> {
    if let Some((handle, suffix)) = tag
        && handle == CORE
    {
        let plain = resolve_plain(text);
        return match suffix.as_str() {
            "str" => Ok(Value::String(text.to_owned())),
            "null" => Ok(Value::Null),
            "bool" => match plain {
                Value::Bool(_) => Ok(plain),
                _ => Err(format!("{text:?} is not a boolean")),
            },
            "int" => match plain {
                Value::Number(ref n) if n.is_i64() || n.is_u64() => Ok(plain),
                _ => Err(format!("{text:?} is not an integer")),
            },
            "float" => match plain {
                Value::Number(_) => Ok(plain),
                _ => Err(format!("{text:?} is not a number")),
            },
            _ => Ok(plain),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    Ok(resolve_plain(text))
}

/// go-yaml v2's `resolve` for an untagged plain scalar.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Value::String(text.to_owned());
    }
    let plain: String = text.chars().filter(|&c| c != '_').collect();
    if let Some(n) = parse_go_int(&plain) {
        if let Ok(i) = i64::try_from(n) {
            return Value::Number(i.into());
        }
        if let Ok(u) = u64::try_from(n) {
            return Value::Number(u.into());
        }
    }
    if is_yaml_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
    {
        return float_value(f).unwrap_or_else(|| Value::String(text.to_owned()));
    }
    Value::String(text.to_owned())
}

/// sigs.k8s.io/yaml prints floats with `%g`: an integral float becomes an integer.
fn float_value(f: f64) -> Option<Value> {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
        return Some(Value::Number((f as i64).into()));
    }
    Number::from_f64(f).map(Value::Number)
}

/// Go's `strconv.ParseInt(s, 0, 64)` prefixes: `0x`, `0o`, `0b`, and a leading
/// `0` for octal.
fn parse_go_int(s: &str) -> Option<i128> {
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_owned())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_owned())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_owned())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned())
    } else {
        (10, lower)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i128::from_str_radix(&digits, radix).ok()?;
    Some(if neg { -n } else { n })
}

/// go-yaml v2's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && matches!(b[i], b'-' | b'+') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if i < b.len() && matches!(b[i], b'-' | b'+') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Document {
        let mut docs = parse_stream(text).unwrap();
        assert_eq!(docs.len(), 1, "{docs:?}");
        docs.remove(0)
    }

    #[test]
    fn scalars_resolve_like_go_yaml_v2() {
        let d = one(
            "a: 1\nb: '1'\nc: yes\nd: off\ne: 0755\nf: 1_000\ng: 2.0\nh: 2.5\ni: ~\nj: 0x1F\nk: \"true\"\nl: 1.2.3\nm: -3\nnn: .5\no: 15s\np: |\n  x\n",
        );
        assert_eq!(
            d.value,
            json!({"a": 1, "b": "1", "c": true, "d": false, "e": 493, "f": 1000, "g": 2,
                   "h": 2.5, "i": null, "j": 31, "k": "true", "l": "1.2.3", "m": -3, "nn": 0.5,
                   "o": "15s", "p": "x\n"})
        );
    }

    #[test]
    fn y_and_n_keys_are_booleans_as_in_go_yaml_v2() {
        // sigs.k8s.io/yaml turns the key `y` into "true": kubectl does the same.
        let d = one("y: 1\nn: 2\n");
        assert_eq!(d.value, json!({"true": 1, "false": 2}));
    }

    #[test]
    fn tags_override_resolution() {
        let d = one("a: !!str 10\nb: !!int \"7\"\n");
        assert_eq!(d.value, json!({"a": "10", "b": 7}));
        assert!(parse_stream("a: !!int x\n").is_err());
    }

    #[test]
    fn positions_follow_keys_and_items() {
        let d = one("a:\n  b:\n    - x: 1\n      w: 2\n    - z\nc: [1, 2]\n");
        assert_eq!(d.positions["a"], 1);
        assert_eq!(d.positions["a.b"], 2);
        assert_eq!(d.positions["a.b[0]"], 3);
        assert_eq!(d.positions["a.b[0].w"], 4);
        assert_eq!(d.positions["a.b[1]"], 5);
        assert_eq!(d.positions["c[1]"], 6);
    }

    #[test]
    fn odd_keys_are_quoted_in_paths() {
        let d = one("metadata:\n  annotations:\n    rolltest.dev/x: \"y\"\n");
        assert_eq!(
            d.positions["metadata.annotations[\"rolltest.dev/x\"]"], 3,
            "{:?}",
            d.positions
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let d = one("base: &b {x: 1, w: 2}\nother:\n  <<: *b\n  w: 3\nlist: [*b]\n");
        assert_eq!(
            d.value,
            json!({"base": {"x": 1, "w": 2}, "other": {"x": 1, "w": 3}, "list": [{"x": 1, "w": 2}]})
        );
    }

    #[test]
    fn duplicate_keys_are_errors_with_position() {
        let e = parse_stream("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1));
        assert!(e.message.contains("duplicate key"), "{e:?}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse_stream("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(e.line >= 2, "{e:?}");
        assert!(!e.message.is_empty());
    }

    #[test]
    fn streams_keep_empty_documents_as_null() {
        let docs = parse_stream("---\n---\na: 1\n---\n").unwrap();
        let values: Vec<_> = docs.iter().map(|d| d.value.clone()).collect();
        assert!(values.contains(&json!({"a": 1})), "{values:?}");
        assert!(values.iter().filter(|v| v.is_null()).count() >= 1);
    }

    #[test]
    fn json_is_yaml() {
        let d = one("{\"kind\": \"Service\", \"spec\": {\"ports\": [{\"port\": 80}]}}");
        assert_eq!(d.value["spec"]["ports"][0]["port"], json!(80));
    }
}
