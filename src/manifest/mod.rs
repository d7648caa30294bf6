//! Kubernetes manifest files as rolltest reads them: multi-document YAML (or
//! JSON), `List` kinds expanded, empty documents skipped, every object kept as
//! a `serde_json::Value` together with the source line of each of its fields.
//!
//! Values read the way `kubectl` reads them (go-yaml v2 then JSON, see
//! [`yaml`]): numbers stay numbers, quoted strings stay strings, `yes`/`on`
//! are booleans. The lines serve `rolltest lint` findings and error messages.
//!
//! ```
//! let m = rolltest::manifest::parse(
//!     "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  ports:\n  - port: 80\n",
//!     "svc.yaml",
//! )
//! .unwrap();
//! assert_eq!(m[0].kind, "Service");
//! assert_eq!(m[0].line_of("spec.ports[0].port"), 7);
//! assert_eq!(m[0].line_of("spec.selector"), 5); // missing: its nearest ancestor
//! ```

pub mod knobs;
mod yaml;

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

/// One Kubernetes object from a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file it came from, as given (`<stdin>` for standard input).
    pub file: String,
    /// 0-based index of its YAML document in the file (empty documents count).
    pub doc: usize,
    /// 1-based line of the object: its `kind` key, else the start of its document.
    pub line: usize,
    /// The object.
    pub value: Value,
    /// `kind`.
    pub kind: String,
    /// `apiVersion`.
    pub api_version: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, when set.
    pub namespace: Option<String>,
    /// Field path (`spec.template.spec.containers[0].lifecycle.preStop`) → 1-based
    /// line of its key (or of the item, for list items). Keys that are not plain
    /// identifiers are written `["rolltest.dev/x"]`.
    pub positions: BTreeMap<String, usize>,
}

impl Manifest {
    /// The line of a field; for a field that is not there, the line of its
    /// nearest existing ancestor, and finally the object's line.
    pub fn line_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if p.is_empty() {
                return self.line;
            }
            if let Some(&line) = self.positions.get(p) {
                return line;
            }
            p = parent_path(p);
        }
    }

    /// `Kind/name`, as findings name objects.
    pub fn object(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The value at a field path written like [`Manifest::positions`] keys
    /// (`spec.template.spec.containers[0].name`).
    pub fn get(&self, path: &str) -> Option<&Value> {
        get_path(&self.value, path)
    }
}

/// Why manifests could not be read. Every variant is bad input (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Invalid YAML, or a document that is not a Kubernetes object.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Reads every object of a manifest file (see [`parse`]).
pub fn load_file(path: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Parses the objects of a multi-document YAML (or JSON) text; `file` names it
/// in the results and errors. Empty documents are skipped and the items of a
/// `List` (or `*List`) are returned one by one. Every object needs `kind`,
/// `apiVersion` and `metadata.name`.
pub fn parse(text: &str, file: &str) -> Result<Vec<Manifest>, ManifestError> {
    let docs = yaml::parse_stream(text).map_err(|e| ManifestError::Invalid {
        file: file.to_owned(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let mut out = Vec::new();
    for doc in docs {
        let root_line = doc.positions.get("").copied().unwrap_or(1);
        let invalid = |line: usize, message: String| ManifestError::Invalid {
            file: file.to_owned(),
            line,
            column: 1,
            message,
        };
        match &doc.value {
            Value::Null => continue,
            Value::Object(_) => {}
            other => {
                return Err(invalid(
                    root_line,
                    format!(
                        "document {} is {}, not a Kubernetes object (a mapping)",
                        doc.index,
                        type_name(other)
                    ),
                ));
            }
        }
        let kind = doc.value.get("kind").and_then(Value::as_str).unwrap_or("");
        let items = doc.value.get("items").and_then(Value::as_array);
        if kind.ends_with("List")
            && let Some(items) = items
        {
            for (i, item) in items.iter().enumerate() {
                let prefix = format!("items[{i}]");
                let positions = doc
                    .positions
                    .iter()
                    .filter_map(|(p, &line)| {
                        let rest = p.strip_prefix(&prefix)?;
                        let rest = if rest.is_empty() {
                            ""
                        } else {
                            rest.strip_prefix('.')
                                .or_else(|| rest.starts_with('[').then_some(rest))?
                        };
                        Some((rest.to_owned(), line))
                    })
                    .collect();
                let item_line = doc.positions.get(&prefix).copied().unwrap_or(root_line);
                out.push(object(
                    file,
                    doc.index,
                    item.clone(),
                    positions,
                    item_line,
                    &format!("item {i} of the {kind} in document {}", doc.index),
                )?);
            }
            continue;
        }
        out.push(object(
            file,
            doc.index,
            doc.value,
            doc.positions,
            root_line,
            &format!("document {}", doc.index),
        )?);
    }
    Ok(out)
}

fn object(
    file: &str,
    doc: usize,
    value: Value,
    positions: BTreeMap<String, usize>,
    start_line: usize,
    what: &str,
) -> Result<Manifest, ManifestError> {
    let line = positions.get("kind").copied().unwrap_or(start_line);
    let invalid = |path: &str, message: String| ManifestError::Invalid {
        file: file.to_owned(),
        line: {
            let mut p = path;
            loop {
                if let Some(&l) = positions.get(p) {
                    break l;
                }
                if p.is_empty() {
                    break start_line;
                }
                p = parent_path(p);
            }
        },
        column: 1,
        message,
    };
    if !value.is_object() {
        return Err(invalid(
            "",
            format!("{what} is {}, not a Kubernetes object", type_name(&value)),
        ));
    }
    let field = |path: &str| -> Result<String, ManifestError> {
        match get_path(&value, path) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                Err(invalid(path, format!("{what} has no {path}")))
            }
            Some(other) => Err(invalid(
                path,
                format!("{what}: {path} must be a string, not {}", type_name(other)),
            )),
        }
    };
    let kind = field("kind")?;
    let api_version = field("apiVersion")?;
    let name = field("metadata.name")?;
    let namespace = match get_path(&value, "metadata.namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(invalid(
                "metadata.namespace",
                format!(
                    "{what}: metadata.namespace must be a string, not {}",
                    type_name(other)
                ),
            ));
        }
    };
    Ok(Manifest {
        file: file.to_owned(),
        doc,
        line,
        value,
        kind,
        api_version,
        name,
        namespace,
        positions,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The path one level up: `a.b[0]` → `a.b`, `a["x.y"]` → `a`, `a` → ``.
pub(crate) fn parent_path(path: &str) -> &str {
    if path.ends_with("\"]") {
        return path.rfind("[\"").map_or("", |i| &path[..i]);
    }
    if path.ends_with(']') {
        return path.rfind('[').map_or("", |i| &path[..i]);
    }
    path.rfind('.').map_or("", |i| &path[..i])
}

/// Splits a path into map keys and list indexes.
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
            continue;
        }
        if rest.starts_with("[\"") {
            // A JSON string key: read it with serde_json.
            let quoted = &rest[1..];
            let mut de = serde_json::Deserializer::from_str(quoted).into_iter::<String>();
            match de.next() {
                Some(Ok(key)) => {
                    let used = de.byte_offset();
                    out.push(Segment::Key(key));
                    rest = quoted[used..].strip_prefix(']').unwrap_or("");
                }
                _ => break,
            }
            continue;
        }
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            match r[..end].parse() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => out.push(Segment::Key(r[..end].to_owned())),
            }
            rest = r.get(end + 1..).unwrap_or("");
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        out.push(Segment::Key(rest[..end].to_owned()));
        rest = &rest[end..];
    }
    out
}

enum Segment {
    Key(String),
    Index(usize),
}

/// The value at a path (`a.b[0]["x.y"]`).
pub(crate) fn get_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    segments(path)
        .into_iter()
        .try_fold(value, |v, seg| match seg {
            Segment::Key(k) => v.get(k.as_str()),
            Segment::Index(i) => v.get(i),
        })
}

/// A scalar as a string (YAML may have made `version: 1` or `sleep 5`'s
/// argument a number).
pub(crate) fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: &str = "\
# leading comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
  annotations:
    rolltest.dev/max-unavailable-reason: \"batch\"
spec:
  replicas: 3
  template:
    spec:
      containers:
      - name: api
        image: x
        lifecycle:
          preStop:
            exec:
              command: [\"sleep\", \"15\"]
";

    #[test]
    fn reads_an_object_with_lines() {
        let m = parse(DEPLOY, "d.yaml").unwrap();
        assert_eq!(m.len(), 1);
        let d = &m[0];
        assert_eq!(
            (d.kind.as_str(), d.api_version.as_str(), d.name.as_str()),
            ("Deployment", "apps/v1", "api")
        );
        assert_eq!(d.namespace.as_deref(), Some("shop"));
        assert_eq!(d.line, 3);
        assert_eq!(d.line_of("spec.replicas"), 10);
        assert_eq!(d.line_of("spec.template.spec.containers[0]"), 14);
        assert_eq!(
            d.line_of("spec.template.spec.containers[0].lifecycle.preStop"),
            17
        );
        // Missing fields fall back to the nearest ancestor.
        assert_eq!(
            d.line_of("spec.template.spec.containers[0].readinessProbe"),
            14
        );
        assert_eq!(d.line_of("spec.strategy.rollingUpdate.maxSurge"), 9);
        assert_eq!(d.line_of("status"), 3);
        assert_eq!(
            d.line_of("metadata.annotations[\"rolltest.dev/max-unavailable-reason\"]"),
            8
        );
        assert_eq!(
            d.get("metadata.annotations[\"rolltest.dev/max-unavailable-reason\"]"),
            Some(&Value::String("batch".into()))
        );
        assert_eq!(d.get("spec.replicas"), Some(&Value::from(3)));
        assert_eq!(
            d.get("spec.template.spec.containers[0].lifecycle.preStop.exec.command[1]"),
            Some(&Value::String("15".into()))
        );
    }

    #[test]
    fn multi_document_streams_skip_empty_documents() {
        let text = format!(
            "---\n{DEPLOY}---\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: api}}\n...\n"
        );
        let m = parse(&text, "all.yaml").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].kind, "Service");
        assert_eq!(m[1].line, 24);
        assert!(m[1].doc > m[0].doc);
    }

    #[test]
    fn list_items_become_objects_with_their_own_paths() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: a\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: b\n  spec:\n    selector: {app: b}\n";
        let m = parse(text, "l.yaml").unwrap();
        assert_eq!(
            m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(m[1].line, 9);
        assert_eq!(m[1].line_of("spec.selector.app"), 13);
        assert_eq!(m[0].line_of("spec"), 5);
    }

    #[test]
    fn missing_identity_fields_are_clear_errors() {
        let e = parse(
            "apiVersion: v1\nkind: Service\nmetadata:\n  labels: {}\n",
            "s.yaml",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("s.yaml:3:1: "), "{msg}");
        assert!(msg.contains("metadata.name"), "{msg}");
        let e = parse("apiVersion: v1\nmetadata: {name: x}\n", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("no kind"), "{e}");
        let e = parse("kind: Service\nmetadata: {name: x}\n", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("no apiVersion"), "{e}");
        let e = parse("- a\n- b\n", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("not a Kubernetes object"), "{e}");
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let e = parse("kind: Service\nmetadata:\n  name: [x\n", "bad.yaml").unwrap_err();
        match e {
            ManifestError::Invalid {
                file,
                line,
                column,
                message,
            } => {
                assert_eq!(file, "bad.yaml");
                assert!(line >= 3, "{line}");
                assert!(column >= 1);
                assert!(!message.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn load_file_reports_unreadable_files() {
        let e = load_file(Path::new("/nonexistent/rolltest/x.yaml")).unwrap_err();
        assert!(matches!(e, ManifestError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/rolltest/x.yaml"));
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_path("a.b[0]"), "a.b");
        assert_eq!(parent_path("a.b[0].c"), "a.b[0]");
        assert_eq!(parent_path("a[\"x.y\"]"), "a");
        assert_eq!(parent_path("a[\"x.y\"].z"), "a[\"x.y\"]");
        assert_eq!(parent_path("a"), "");
    }
}
