//! Scenario errors: each names the file, the line and column, and the key path.

use std::{fmt, path::PathBuf};

/// Why a scenario could not be used. Every variant is bad input (exit code 2):
/// the caller should show it and stop.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a value has the wrong type or is out of range.
    #[error("{}{}: {}", FileLine(file, *line), key_prefix(key), message)]
    Invalid {
        /// The scenario file (`None` for flags).
        file: Option<PathBuf>,
        /// 1-based line and column of the offending value, when known.
        line: Option<(usize, usize)>,
        /// Key path such as `load.rate` (empty for the document itself).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A `rolltest run` flag has an invalid value or does not fit the scenario.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag(s), e.g. `--namespace`.
        flag: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl ScenarioError {
    /// Fills in the line of an [`ScenarioError::Invalid`] from its key path.
    pub(crate) fn locate(self, text: &str) -> Self {
        match self {
            ScenarioError::Invalid {
                file,
                line: None,
                key,
                message,
            } => {
                let line = find_key(text, &key);
                ScenarioError::Invalid {
                    file,
                    line,
                    key,
                    message,
                }
            }
            other => other,
        }
    }
}

/// Line and column (1-based) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

/// The position of the value at a dotted key path; when the path does not
/// exist (a missing key), the position of its deepest existing table.
pub(crate) fn find_key(text: &str, key: &str) -> Option<(usize, usize)> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let root = toml::Spanned::new(root.span(), toml::de::DeValue::Table(root.into_inner()));
    let mut node = &root;
    let mut span = None;
    // `actions[0].do` and `actions.0.do` name the same value.
    let key = key.replace('[', ".").replace(']', "");
    for segment in key.split('.').filter(|s| !s.is_empty()) {
        let next = match segment.parse::<usize>() {
            Ok(i) if matches!(node.get_ref(), toml::de::DeValue::Array(_)) => node.get_ref().get(i),
            _ => node.get_ref().get(segment),
        };
        let Some(next) = next else { break };
        span = Some(next.span());
        node = next;
    }
    span.map(|s| line_col(text, s.start))
}

struct FileLine<'a>(&'a Option<PathBuf>, Option<(usize, usize)>);

impl fmt::Display for FileLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}", path.display())?,
            None => f.write_str("flags")?,
        }
        if let Some((line, col)) = self.1 {
            write!(f, ":{line}:{col}")?;
        }
        Ok(())
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(": {key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 11), (2, 6));
    }

    #[test]
    fn find_key_walks_tables() {
        let text = "name = \"x\"\n[load]\nrate = 5\n";
        assert_eq!(find_key(text, "load.rate"), Some((3, 8)));
        // A missing key points at its table.
        assert_eq!(find_key(text, "load.nope").map(|(l, _)| l), Some(2));
        assert_eq!(find_key(text, "nope"), None);
        let text = "[[actions]]\nat = \"1s\"\n[[actions]]\nat = \"2s\"\ndo = \"x\"\n";
        assert_eq!(find_key(text, "actions[1].do"), Some((5, 6)));
    }
}
