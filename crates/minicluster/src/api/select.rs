//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`), parsed
//! once per request and matched against stored JSON objects.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector (all requirements must hold; empty matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelReq>);

/// A parsed field selector (`path=value`, `path==value`, `path!=value`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),!h,i`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let req = if let Some(key) = part.strip_prefix('!') {
                LabelReq::NotExists(key.trim().to_string())
            } else if let Some((key, rest)) = split_word(part, " notin ") {
                LabelReq::NotIn(key, parse_set(rest)?)
            } else if let Some((key, rest)) = split_word(part, " in ") {
                LabelReq::In(key, parse_set(rest)?)
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelReq::NotIn(k.trim().to_string(), vec![v.trim().to_string()])
            } else if let Some((k, v)) = part.split_once("==") {
                LabelReq::In(k.trim().to_string(), vec![v.trim().to_string()])
            } else if let Some((k, v)) = part.split_once('=') {
                LabelReq::In(k.trim().to_string(), vec![v.trim().to_string()])
            } else {
                LabelReq::Exists(part.to_string())
            };
            let key = match &req {
                LabelReq::Exists(k)
                | LabelReq::NotExists(k)
                | LabelReq::In(k, _)
                | LabelReq::NotIn(k, _) => k,
            };
            if !valid_key(key) {
                return Err(format!("invalid label selector {s:?}: bad key {key:?}"));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// From a `matchLabels` map (a Deployment's or Service's selector).
    pub fn from_match_labels(labels: &serde_json::Map<String, Value>) -> Self {
        LabelSelector(
            labels
                .iter()
                .map(|(k, v)| {
                    LabelReq::In(k.clone(), vec![v.as_str().unwrap_or_default().to_string()])
                })
                .collect(),
        )
    }

    /// A `metav1.LabelSelector` object as `LabelSelectorAsSelector` reads it
    /// (apimachinery `pkg/apis/meta/v1/helpers.go`): a missing or `null`
    /// selector selects nothing (`Ok(None)`, `labels.Nothing()`), an empty
    /// one `{}` selects everything, and `matchLabels` and `matchExpressions`
    /// (`In`, `NotIn`, `Exists`, `DoesNotExist`) must all hold. An operator it
    /// does not know, or values where the operator takes none (or none where
    /// it needs some), is an error, as upstream's.
    pub fn from_label_selector(selector: &Value) -> Result<Option<Self>, String> {
        if selector.is_null() {
            return Ok(None);
        }
        let Some(object) = selector.as_object() else {
            return Err(format!("invalid label selector {selector}: not an object"));
        };
        let mut reqs = match object.get("matchLabels") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => Self::from_match_labels(m).0,
            Some(other) => return Err(format!("invalid matchLabels {other}: not a map")),
        };
        let expressions = match object.get("matchExpressions") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(other) => return Err(format!("invalid matchExpressions {other}: not a list")),
        };
        for e in expressions {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = e["values"]
                .as_array()
                .map(|vs| {
                    vs.iter()
                        .map(|v| v.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default();
            let op = e["operator"].as_str().unwrap_or_default();
            let req = match op {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "for 'in', 'notin' operators, values set can't be empty (key {key:?})"
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "values set must be empty for exists and does not exist (key {key:?})"
                    ));
                }
                "In" => LabelReq::In(key, values),
                "NotIn" => LabelReq::NotIn(key, values),
                "Exists" => LabelReq::Exists(key),
                "DoesNotExist" => LabelReq::NotExists(key),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            reqs.push(req);
        }
        Ok(Some(LabelSelector(reqs)))
    }

    /// Whether a labels map satisfies the selector.
    pub fn matches_labels(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
        })
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, object: &Value) -> bool {
        self.matches_labels(object["metadata"]["labels"].as_object())
    }

    /// Whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn split_word<'a>(part: &'a str, word: &str) -> Option<(String, &'a str)> {
    let i = part.find(word)?;
    Some((part[..i].trim().to_string(), part[i + word.len()..].trim()))
}

fn parse_set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("invalid label selector set {s:?}: expected (a,b)"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl FieldSelector {
    /// Parses `metadata.name=web,spec.nodeName!=n1`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, true, v)
            } else {
                return Err(format!(
                    "invalid field selector {part:?}: expected field=value"
                ));
            };
            reqs.push((path.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether an object satisfies the selector (a missing field reads as "").
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let mut node = object;
            for seg in path.split('.') {
                node = &node[seg];
            }
            let actual = match node {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_table() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let table = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=api", false),
            ("app in (api, web)", true),
            ("app notin (api,web)", false),
            ("tier,app=web", true),
            ("!tier", false),
            ("!missing", true),
            ("missing", false),
            ("missing!=x", true),
        ];
        for (sel, expected) in table {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&obj),
                expected,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn label_selector_objects_as_upstream_reads_them() {
        let web = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let bare = json!({"metadata": {}});
        let read = |s: Value| LabelSelector::from_label_selector(&s);
        // nil selects nothing, {} everything (even a pod without labels).
        assert_eq!(read(Value::Null), Ok(None));
        let all = read(json!({})).unwrap().expect("a selector");
        assert!(all.matches(&web) && all.matches(&bare));
        let table = [
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "api"}}), false),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api", "web"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
                false,
            ),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}),
                true,
            ),
        ];
        for (sel, expected) in table {
            let s = read(sel.clone()).unwrap().expect("a selector");
            assert_eq!(s.matches(&web), expected, "{sel}");
        }
        for bad in [
            json!({"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["web"]}]}),
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["web"]}]}),
            json!("app=web"),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_table() {
        let obj = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let table = [
            ("metadata.name=web", true),
            ("metadata.name==web", true),
            ("metadata.name!=web", false),
            ("spec.nodeName=n1,status.phase=Running", true),
            ("spec.nodeName=n2", false),
            ("spec.missing=", true),
        ];
        for (sel, expected) in table {
            assert_eq!(
                FieldSelector::parse(sel).unwrap().matches(&obj),
                expected,
                "{sel}"
            );
        }
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
