//! Images to local commands: the embedded cluster pulls nothing, so every
//! image a pod names must map to a program on this machine.
//!
//! A pattern matches an image exactly or, when it ends with `*`, by prefix.
//! A pattern without `/` is compared with the image's last path segment
//! (`rolltest-demo:v1` matches `ghcr.io/x/rolltest-demo:v1`); a pattern
//! with `/` is compared with the whole reference. The first matching rule
//! wins; the demo default (if any) is tried last.

use std::path::PathBuf;

/// An ordered list of `(image pattern, command)` rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMap {
    rules: Vec<(String, Vec<String>)>,
    fallback: Option<(String, Vec<String>)>,
}

/// The pattern of the built-in demo rule.
pub const DEMO_PATTERN: &str = "rolltest-demo*";

impl ImageMap {
    /// An empty map: every image is unmapped.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map whose only rule runs images named like `rolltest-demo*` (any
    /// tag, any registry path) as `[<rolltest_binary>, "serve"]`. Rules
    /// added with [`push`](Self::push) take precedence over it.
    pub fn with_demo_default(rolltest_binary: PathBuf) -> Self {
        ImageMap {
            rules: Vec::new(),
            fallback: Some((
                DEMO_PATTERN.to_string(),
                vec![
                    rolltest_binary.to_string_lossy().into_owned(),
                    "serve".to_string(),
                ],
            )),
        }
    }

    /// Sets the demo rule (`rolltest-demo*` → `[<rolltest_binary>, "serve"]`),
    /// tried after every other rule.
    pub fn add_demo_default(&mut self, rolltest_binary: PathBuf) {
        self.fallback = Self::with_demo_default(rolltest_binary).fallback;
    }

    /// Appends a rule (`command` is program then arguments; an empty
    /// command makes the image unmapped).
    pub fn push(&mut self, pattern: impl Into<String>, command: Vec<String>) {
        self.rules.push((pattern.into(), command));
    }

    /// The command for `image`, if a rule maps it to a non-empty command.
    pub fn resolve(&self, image: &str) -> Option<&[String]> {
        self.rules
            .iter()
            .chain(self.fallback.iter())
            .find(|(pattern, _)| matches(pattern, image))
            .map(|(_, command)| command.as_slice())
            .filter(|command| !command.is_empty())
    }
}

/// Whether `pattern` matches `image` (see the module doc).
pub fn matches(pattern: &str, image: &str) -> bool {
    let subject = if pattern.contains('/') {
        image
    } else {
        image.rsplit('/').next().unwrap_or(image)
    };
    match pattern.strip_suffix('*') {
        Some(prefix) => subject.starts_with(prefix),
        None => subject == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("rolltest-demo*", "rolltest-demo:v2"));
        assert!(matches("rolltest-demo*", "ghcr.io/x/rolltest-demo:v1"));
        assert!(matches("rolltest-demo*", "rolltest-demo"));
        assert!(!matches("rolltest-demo*", "nginx:1.25"));
        assert!(!matches("rolltest-demo*", "rolltest-demo-x/nginx"));
        assert!(matches("nginx:1.25", "docker.io/library/nginx:1.25"));
        assert!(!matches("nginx:1.25", "nginx:1.26"));
        assert!(matches("ghcr.io/me/*", "ghcr.io/me/app:v1"));
        assert!(!matches("ghcr.io/me/*", "docker.io/me/app:v1"));
    }

    #[test]
    fn first_rule_wins_and_default_is_last() {
        let mut map = ImageMap::with_demo_default(PathBuf::from("/bin/rolltest"));
        assert_eq!(
            map.resolve("rolltest-demo:v1"),
            Some(&["/bin/rolltest".to_string(), "serve".to_string()][..])
        );
        map.push("rolltest-demo:v9", vec!["/bin/true".into()]);
        map.push("rolltest-demo:v9", vec!["/bin/false".into()]);
        assert_eq!(
            map.resolve("rolltest-demo:v9"),
            Some(&["/bin/true".to_string()][..])
        );
        map.push("empty", vec![]);
        assert_eq!(map.resolve("empty"), None);
        assert_eq!(map.resolve("nginx"), None);
    }
}
