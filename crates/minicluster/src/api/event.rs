//! core/v1 Events recorded by the controllers and the kubelet.

use serde_json::{Value, json};

use crate::{
    resources::ResourceKind,
    store::{Store, now_rfc3339},
};

/// Records an event (core/v1 Event) about an object, with a microsecond `eventTime`.
pub fn record_event(
    store: &Store,
    involved: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
    field_path: Option<&str>,
) {
    let event = Event {
        involved,
        type_,
        reason,
        message,
        field_path,
    };
    event.create(
        store,
        json!({"component": component}),
        json!(crate::store::now_rfc3339_micros()),
        component,
        component,
    );
}

/// Records an event as a real kubelet does, through the legacy events
/// recorder (`client-go/tools/record`): `firstTimestamp` = `lastTimestamp`
/// in seconds, no `eventTime` (null), `count: 1`, `source` the component
/// and node (`{component: kubelet, host: NODE}`), `reportingComponent`
/// the component and `reportingInstance` the node. (The recorder's
/// correlator aggregates repeats into one Event with a growing `count`;
/// here every occurrence is an Event of its own.)
#[allow(clippy::too_many_arguments)]
pub fn record_legacy_event(
    store: &Store,
    involved: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
    host: &str,
    field_path: Option<&str>,
) {
    let event = Event {
        involved,
        type_,
        reason,
        message,
        field_path,
    };
    event.create(
        store,
        json!({"component": component, "host": host}),
        Value::Null,
        component,
        host,
    );
}

/// What both recorders write the same way.
struct Event<'a> {
    involved: &'a Value,
    type_: &'a str,
    reason: &'a str,
    message: &'a str,
    field_path: Option<&'a str>,
}

impl Event<'_> {
    /// Creates the Event with the recorder's own `source`, `eventTime` and
    /// reporting fields.
    fn create(
        &self,
        store: &Store,
        source: Value,
        event_time: Value,
        reporting_component: &str,
        reporting_instance: &str,
    ) {
        let Some(events) = ResourceKind::find("", "v1", "events") else {
            return;
        };
        let involved = self.involved;
        let ns = involved["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let name = involved["metadata"]["name"].as_str().unwrap_or("");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let now = now_rfc3339();
        let mut involved_ref = json!({
            "kind": involved["kind"],
            "namespace": ns,
            "name": name,
            "uid": involved["metadata"]["uid"],
            "apiVersion": involved["apiVersion"],
            "resourceVersion": involved["metadata"]["resourceVersion"],
        });
        if let Some(fp) = self.field_path {
            involved_ref["fieldPath"] = json!(fp);
        }
        let event = json!({
            "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
            "involvedObject": involved_ref,
            "reason": self.reason,
            "message": self.message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": event_time,
            "count": 1,
            "type": self.type_,
            "reportingComponent": reporting_component,
            "reportingInstance": reporting_instance,
        });
        let _ = store.create(events, ns, event);
    }
}
