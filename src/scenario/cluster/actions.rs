//! `[[actions]]`: the disruptions a scenario fires while the load runs, as
//! written and validated.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DEFAULT_DRAIN_TIMEOUT;
use crate::scenario::values::{Offset, PositiveDuration};

/// One `[[actions]]` entry as written: `at`, `do` and the keys `do` takes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    /// Offset from the start of the load.
    pub at: Offset,
    /// `rollout-restart`, `drain-node`, `delete-pod`, `scale`, `set-image`.
    #[serde(rename = "do")]
    pub action: ActionName,
    /// rollout-restart, scale, set-image: the Deployment (default: the scenario's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// drain-node: the node (default: the node running most of the Deployment's pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// delete-pod: the pod (default: the Deployment's oldest pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// delete-pod, drain-node: override the pods' grace period (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<i64>,
    /// drain-node: give up evicting after this long (default 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<PositiveDuration>,
    /// scale: the new replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// set-image: the new image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// set-image: the container (default: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// `do`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionName {
    /// `kubectl rollout restart`.
    RolloutRestart,
    /// `kubectl drain`.
    DrainNode,
    /// `kubectl delete pod`.
    DeletePod,
    /// `kubectl scale`.
    Scale,
    /// `kubectl set image`.
    SetImage,
}

impl ActionName {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionName::RolloutRestart => "rollout-restart",
            ActionName::DrainNode => "drain-node",
            ActionName::DeletePod => "delete-pod",
            ActionName::Scale => "scale",
            ActionName::SetImage => "set-image",
        }
    }
}

/// One action, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Index in `[[actions]]`.
    pub index: usize,
    /// Offset from the start of the load.
    pub at: Duration,
    /// What to do.
    pub kind: ActionKind,
}

/// What an action does.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// Patch the pod template's `kubectl.kubernetes.io/restartedAt` annotation.
    RolloutRestart {
        /// The Deployment (`None`: the scenario's).
        deployment: Option<String>,
    },
    /// Cordon the node and evict each of its pods, retrying 429s.
    DrainNode {
        /// The node (`None`: the one running most of the Deployment's pods).
        node: Option<String>,
        /// Grace period override for the evictions.
        grace_period: Option<i64>,
        /// Give up after this long.
        timeout: Duration,
    },
    /// Delete one pod.
    DeletePod {
        /// The pod (`None`: the Deployment's oldest).
        pod: Option<String>,
        /// Grace period override.
        grace_period: Option<i64>,
    },
    /// Set the Deployment's replicas.
    Scale {
        /// The Deployment (`None`: the scenario's).
        deployment: Option<String>,
        /// The new count.
        replicas: i32,
    },
    /// Change a container's image.
    SetImage {
        /// The Deployment (`None`: the scenario's).
        deployment: Option<String>,
        /// The container (`None`: the first).
        container: Option<String>,
        /// The new image.
        image: String,
    },
}

impl ActionKind {
    /// The `do` name.
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::RolloutRestart { .. } => "rollout-restart",
            ActionKind::DrainNode { .. } => "drain-node",
            ActionKind::DeletePod { .. } => "delete-pod",
            ActionKind::Scale { .. } => "scale",
            ActionKind::SetImage { .. } => "set-image",
        }
    }
}

/// Checks each `[[actions]]` entry against what its `do` takes.
pub(in crate::scenario) fn validate_actions<E>(
    raw: &[RawAction],
    load_duration: Duration,
    invalid: impl Fn(&str, String) -> E,
) -> Result<Vec<Action>, E> {
    let mut out = Vec::with_capacity(raw.len());
    for (index, a) in raw.iter().enumerate() {
        let key = |k: &str| format!("actions[{index}].{k}");
        let allowed: &[&str] = match a.action {
            ActionName::RolloutRestart => &["deployment"],
            ActionName::DrainNode => &["node", "grace_period", "timeout"],
            ActionName::DeletePod => &["pod", "grace_period"],
            ActionName::Scale => &["deployment", "replicas"],
            ActionName::SetImage => &["deployment", "image", "container"],
        };
        let given = [
            ("deployment", a.deployment.is_some()),
            ("node", a.node.is_some()),
            ("pod", a.pod.is_some()),
            ("grace_period", a.grace_period.is_some()),
            ("timeout", a.timeout.is_some()),
            ("replicas", a.replicas.is_some()),
            ("image", a.image.is_some()),
            ("container", a.container.is_some()),
        ];
        for (name, set) in given {
            if set && !allowed.contains(&name) {
                return Err(invalid(
                    &key(name),
                    format!(
                        "`{name}` does not apply to do = \"{}\" (it takes: {})",
                        a.action.as_str(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        if a.at.0 >= load_duration {
            return Err(invalid(
                &key("at"),
                format!(
                    "is at or after the end of the load ({}): the disruption would go unobserved",
                    crate::scenario::values::format_duration(load_duration)
                ),
            ));
        }
        if let Some(g) = a.grace_period
            && g < 0
        {
            return Err(invalid(
                &key("grace_period"),
                format!("must be 0 or more seconds (got {g})"),
            ));
        }
        let kind = match a.action {
            ActionName::RolloutRestart => ActionKind::RolloutRestart {
                deployment: a.deployment.clone(),
            },
            ActionName::DrainNode => ActionKind::DrainNode {
                node: a.node.clone(),
                grace_period: a.grace_period,
                timeout: a.timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |t| t.0),
            },
            ActionName::DeletePod => ActionKind::DeletePod {
                pod: a.pod.clone(),
                grace_period: a.grace_period,
            },
            ActionName::Scale => {
                let replicas = a
                    .replicas
                    .ok_or_else(|| invalid(&key("replicas"), "is required for scale".into()))?;
                if replicas < 0 {
                    return Err(invalid(
                        &key("replicas"),
                        format!("must be 0 or more (got {replicas})"),
                    ));
                }
                ActionKind::Scale {
                    deployment: a.deployment.clone(),
                    replicas,
                }
            }
            ActionName::SetImage => {
                let image = a
                    .image
                    .clone()
                    .filter(|i| !i.trim().is_empty())
                    .ok_or_else(|| invalid(&key("image"), "is required for set-image".into()))?;
                ActionKind::SetImage {
                    deployment: a.deployment.clone(),
                    container: a.container.clone(),
                    image,
                }
            }
        };
        out.push(Action {
            index,
            at: a.at.0,
            kind,
        });
    }
    out.sort_by_key(|a| a.at);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::parse;
    use super::*;

    #[test]
    fn actions_are_sorted_by_offset_and_keep_their_index() {
        let s = parse(
            "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[[actions]]\nat = \"9s\"\ndo = \"scale\"\nreplicas = 2\n[[actions]]\nat = \"0s\"\ndo = \"delete-pod\"\ngrace_period = 0\n",
        )
        .expect("valid");
        assert_eq!(s.actions[0].index, 1);
        assert_eq!(s.actions[0].at, Duration::ZERO);
        assert_eq!(s.actions[1].index, 0);
        assert_eq!(
            s.actions[1].kind,
            ActionKind::Scale {
                deployment: None,
                replicas: 2
            }
        );
    }
}
