//! The pod status the kubelet publishes: phase, IPs, the four conditions
//! and the one container status, rendered from [`PodView`] and written with
//! a read-modify-write that touches only `status` (a condition keeps its
//! `lastTransitionTime` while its status does not change; `PodScheduled`
//! from the scheduler is kept).

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use serde_json::{Value, json};

use super::spec::PodPlan;
use crate::{
    process::ExitInfo,
    resources::ResourceKind,
    store::{Store, StoreError, now_rfc3339},
};

/// The pods resource.
pub fn pods() -> Option<&'static ResourceKind> {
    ResourceKind::find("", "v1", "pods")
}

/// RFC 3339 (seconds) of an `Instant` in the past.
pub fn rfc3339_of(at: Instant) -> String {
    let when = SystemTime::now()
        .checked_sub(at.elapsed())
        .unwrap_or_else(SystemTime::now);
    humantime::format_rfc3339_seconds(when).to_string()
}

/// What the kubelet knows of a pod, rendered into `status`.
#[derive(Debug, Clone)]
pub struct PodView {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: &'static str,
    /// The pod IP once the process runs.
    pub pod_ip: Option<IpAddr>,
    /// `startTime`.
    pub start_time: Option<String>,
    /// `state` of the container (`{waiting: …}`, `{running: …}`, `{terminated: …}`).
    pub state: Value,
    /// `lastState` (`{}` or `{terminated: …}`).
    pub last_state: Value,
    /// Container `ready`.
    pub ready: bool,
    /// Container `started`.
    pub started: bool,
    /// `restartCount`.
    pub restart_count: u32,
    /// `containerID` of the current/last process.
    pub container_id: Option<String>,
}

impl PodView {
    /// A new pod: Pending, container creating.
    pub fn new() -> Self {
        PodView {
            phase: "Pending",
            pod_ip: None,
            start_time: None,
            state: waiting("ContainerCreating", None),
            last_state: json!({}),
            ready: false,
            started: false,
            restart_count: 0,
            container_id: None,
        }
    }

    /// Whether the phase is terminal.
    pub fn terminal(&self) -> bool {
        matches!(self.phase, "Succeeded" | "Failed")
    }

    fn render(&self, plan: &PodPlan, old: &Value) -> Value {
        let c = &plan.container;
        let unready = format!("[{}]", c.name);
        let not_ready_reason = if self.terminal() {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let cond = |type_: &str, ok: bool| {
            let status = if ok { "True" } else { "False" };
            let since = old["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|x| x["type"] == type_))
                .filter(|x| x["status"] == status)
                .and_then(|x| x.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now_rfc3339()));
            let mut v = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if !ok {
                v["reason"] = json!(not_ready_reason);
                if !self.terminal() {
                    v["message"] = json!(format!("containers with unready status: {unready}"));
                }
            }
            v
        };
        let scheduled = old["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["type"] == "PodScheduled").cloned())
            .unwrap_or_else(|| cond("PodScheduled", true));
        let mut container = json!({
            "name": c.name,
            "image": c.image,
            "imageID": format!("rolltest://{}", c.image),
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        });
        if let Some(id) = &self.container_id {
            container["containerID"] = json!(id);
        }
        let mut status = json!({
            "phase": self.phase,
            "qosClass": "BestEffort",
            "conditions": [
                scheduled,
                cond("Initialized", true),
                cond("ContainersReady", self.ready),
                cond("Ready", self.ready),
            ],
            "containerStatuses": [container],
        });
        if let Some(ip) = self.pod_ip {
            status["hostIP"] = json!("127.0.0.1");
            status["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        if let Some(t) = &self.start_time {
            status["startTime"] = json!(t);
        }
        status
    }

    /// Writes the status of the pod `plan` describes (same uid only).
    /// `None` if the pod is gone or was replaced.
    pub fn write(&self, store: &Store, plan: &PodPlan) -> Option<Arc<Value>> {
        let pods = pods()?;
        store
            .update(pods, &plan.namespace, &plan.name, |pod| {
                if pod["metadata"]["uid"].as_str() != Some(plan.uid.as_str()) {
                    return Err(StoreError::Conflict {
                        resource: "pods".into(),
                        name: plan.name.clone(),
                    });
                }
                let mut status = self.render(plan, &pod["status"]);
                keep_foreign_conditions(&pod["status"], &mut status);
                pod["status"] = status;
                Ok(())
            })
            .ok()
    }
}

/// The conditions the kubelet does not own (`PodConditionByKubelet`:
/// PodScheduled, Ready, Initialized, ContainersReady, …) stay, ahead of the
/// kubelet's own, as `mergePodStatus` (pkg/kubelet/status/status_manager.go)
/// keeps them: the `DisruptionTarget` an eviction set survives the kubelet's
/// later status writes.
fn keep_foreign_conditions(old: &Value, status: &mut Value) {
    const BY_KUBELET: [&str; 5] = [
        "PodScheduled",
        "Ready",
        "Initialized",
        "ContainersReady",
        "PodReadyToStartContainers",
    ];
    let foreign: Vec<Value> = old["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| !BY_KUBELET.iter().any(|t| c["type"] == *t))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if foreign.is_empty() {
        return;
    }
    let own = status["conditions"].as_array().cloned().unwrap_or_default();
    status["conditions"] = Value::Array(foreign.into_iter().chain(own).collect());
}

impl Default for PodView {
    fn default() -> Self {
        Self::new()
    }
}

/// `{waiting: {reason, message?}}`.
pub fn waiting(reason: &str, message: Option<String>) -> Value {
    let mut w = json!({"reason": reason});
    if let Some(m) = message {
        w["message"] = json!(m);
    }
    json!({"waiting": w})
}

/// `{running: {startedAt}}`.
pub fn running(started_at: &str) -> Value {
    json!({"running": {"startedAt": started_at}})
}

/// `{terminated: {exitCode, signal?, reason, startedAt, finishedAt, containerID}}`.
pub fn terminated(exit: &ExitInfo, started_at: &str, container_id: Option<&str>) -> Value {
    let mut t = json!({
        "exitCode": exit.code.unwrap_or(-1),
        "reason": if exit.success() { "Completed" } else { "Error" },
        "startedAt": started_at,
        "finishedAt": rfc3339_of(exit.at),
    });
    if let Some(sig) = exit.signal {
        t["signal"] = json!(sig);
    }
    if let Some(id) = container_id {
        t["containerID"] = json!(id);
    }
    json!({"terminated": t})
}
