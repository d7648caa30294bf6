//! The object store: every object as JSON, one global resourceVersion counter
//! bumped on every write (like an etcd revision), and a bounded event history
//! from which watches resume; a watch from a version older than the history
//! gets `Gone` (HTTP 410, "too old resource version"), and the client re-lists.
//!
//! Objects are kept as `serde_json::Value` so that every field a client sent
//! survives (kubectl's last-applied annotation, fields this server does not
//! model); controllers read them through k8s-openapi types.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::resources::ResourceKind;

/// How many past events a watch can resume from.
pub const HISTORY: usize = 50_000;
/// How many events a slow watcher may fall behind before it is cut off (it re-lists).
const CHANNEL: usize = 16_384;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed (the object is its final state).
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// Added, modified or deleted.
    pub kind: EventType,
    /// The resource type.
    pub resource: &'static ResourceKind,
    /// Namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// The object after the change (for a delete: its final state).
    pub object: Arc<Value>,
}

/// Store errors; each maps to a Kubernetes Status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such object (404).
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// `deployments.apps`.
        resource: String,
        /// Name.
        name: String,
    },
    /// The name is taken (409).
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// `deployments.apps`.
        resource: String,
        /// Name.
        name: String,
    },
    /// A precondition on resourceVersion or uid failed (409).
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// `deployments.apps`.
        resource: String,
        /// Name.
        name: String,
    },
    /// The object is not valid (422 with the message; 400 for malformed input).
    #[error("{0}")]
    Invalid(String),
    /// A watch asked for history that is gone (410).
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        /// Asked.
        requested: u64,
        /// Oldest still available.
        oldest: u64,
    },
}

type Key = (&'static str, &'static str, String, String);

fn key(r: &ResourceKind, namespace: &str, name: &str) -> Key {
    (r.group, r.plural, namespace.to_string(), name.to_string())
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<WatchEvent>>,
}

/// The store. Cheap to share (`Arc<Store>`); every operation is short and synchronous.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<WatchEvent>>,
}

/// The start of a watch: events to send first, then live ones.
pub struct WatchStart {
    /// Replayed (or, from version 0, synthetic ADDED) events.
    pub initial: Vec<Arc<WatchEvent>>,
    /// Live events after those (filter by resource and namespace).
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
    /// The store's version when the watch started.
    pub rv: u64,
}

/// RFC 3339 with second precision, UTC, as Kubernetes serialises `Time`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// RFC 3339 with microseconds, as Kubernetes serialises `MicroTime`.
pub fn now_rfc3339_micros() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Five characters of the alphabet Kubernetes uses for generated names.
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()
        .iter()
        .take(len)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(CHANNEL);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is applied whole or not at all), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current resourceVersion.
    pub fn version(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get(&self, r: &'static ResourceKind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().objects.get(&key(r, namespace, name)).cloned()
    }

    /// One object, or NotFound.
    pub fn require(
        &self,
        r: &'static ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, StoreError> {
        self.get(r, namespace, name)
            .ok_or_else(|| StoreError::NotFound {
                resource: r.qualified(),
                name: name.to_string(),
            })
    }

    /// Every object of a type (in one namespace, or all), with the store's version.
    pub fn list(
        &self,
        r: &'static ResourceKind,
        namespace: Option<&str>,
    ) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = of_kind(&inner, r, namespace)
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Creates an object: fills `uid`, `creationTimestamp`, `resourceVersion`,
    /// `generation`, `namespace`, and the name from `generateName`.
    pub fn create(
        &self,
        r: &'static ResourceKind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let meta = metadata_mut(&mut object)?;
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => loop {
                    let candidate = format!("{prefix}{}", random_suffix(5));
                    if !inner.objects.contains_key(&key(r, namespace, &candidate)) {
                        break candidate;
                    }
                },
                _ => {
                    return Err(StoreError::Invalid(
                        "metadata.name: Required value: name or generateName is required".into(),
                    ));
                }
            },
        };
        let k = key(r, namespace, &name);
        if inner.objects.contains_key(&k) {
            return Err(StoreError::AlreadyExists {
                resource: r.qualified(),
                name,
            });
        }
        inner.rv += 1;
        let rv = inner.rv;
        meta.insert("name".into(), json!(name));
        if r.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("managedFields");
        if object.get("spec").is_some()
            && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.insert("generation".into(), json!(1));
        }
        set_type_meta(&mut object, r);
        let object = Arc::new(object);
        inner.objects.insert(k, object.clone());
        self.publish(
            &mut inner,
            EventType::Added,
            r,
            namespace,
            object.clone(),
            rv,
        );
        Ok(object)
    }

    /// Read-modify-write of one object under the store's lock. `change` gets
    /// the current object and edits it; returning an error leaves the object
    /// as it was. `generation` is bumped when `spec` changed; nothing is
    /// written (and no event sent) when the object did not change.
    pub fn update(
        &self,
        r: &'static ResourceKind,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value) -> Result<(), StoreError>,
    ) -> Result<Arc<Value>, StoreError> {
        self.try_update(r, namespace, name, change)
    }

    /// [`Store::update`] with the caller's error type (the API server
    /// returns its own Status errors from `change`); store errors convert into it.
    pub fn try_update<E: From<StoreError>>(
        &self,
        r: &'static ResourceKind,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value) -> Result<(), E>,
    ) -> Result<Arc<Value>, E> {
        let mut inner = self.lock();
        let k = key(r, namespace, name);
        let current = existing(&inner, r, &k)?;
        let mut next = (*current).clone();
        change(&mut next)?;
        // Identity is the server's: a client cannot rename or re-uid an object.
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            match current["metadata"].get(field) {
                Some(v) => {
                    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert(field.into(), v.clone());
                    }
                }
                None => {
                    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove(field);
                    }
                }
            }
        }
        set_type_meta(&mut next, r);
        // Compare without the version, which the client may have sent stale.
        if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".into(),
                current["metadata"]["resourceVersion"].clone(),
            );
            meta.insert(
                "generation".into(),
                current["metadata"]["generation"].clone(),
            );
            if current["metadata"].get("generation").is_none() {
                meta.remove("generation");
            }
        }
        if next == *current {
            return Ok(current);
        }
        if next.get("spec") != current.get("spec") {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("generation".into(), json!(generation));
            }
        }
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let next = Arc::new(next);
        inner.objects.insert(k, next.clone());
        self.publish(
            &mut inner,
            EventType::Modified,
            r,
            namespace,
            next.clone(),
            rv,
        );
        Ok(next)
    }

    /// Removes an object; `uid`, when given, must match (a precondition).
    pub fn delete(
        &self,
        r: &'static ResourceKind,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let k = key(r, namespace, name);
        let current = existing(&inner, r, &k)?;
        if let Some(uid) = uid
            && current["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(StoreError::Conflict {
                resource: r.qualified(),
                name: name.to_string(),
            });
        }
        inner.objects.remove(&k);
        inner.rv += 1;
        let rv = inner.rv;
        let mut last = (*current).clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let last = Arc::new(last);
        self.publish(
            &mut inner,
            EventType::Deleted,
            r,
            namespace,
            last.clone(),
            rv,
        );
        Ok(last)
    }

    /// Every change of every object, live (controllers filter for themselves).
    pub fn watch_all(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.events.subscribe()
    }

    /// Starts a watch of one type (in one namespace, or all). `since`: `None`
    /// or 0 starts with a synthetic ADDED per current object; `Some(n)` replays
    /// every change after `n` from the history, or fails with `Gone`.
    pub fn watch(
        &self,
        r: &'static ResourceKind,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStart, StoreError> {
        let inner = self.lock();
        let live = self.events.subscribe();
        let matches = |e: &WatchEvent| {
            std::ptr::eq(e.resource, r) && namespace.is_none_or(|n| n == e.namespace)
        };
        let initial = match since {
            None | Some(0) => of_kind(&inner, r, namespace)
                .map(|((_, _, ns, _), obj)| {
                    Arc::new(WatchEvent {
                        rv: inner.rv,
                        kind: EventType::Added,
                        resource: r,
                        namespace: ns.clone(),
                        object: obj.clone(),
                    })
                })
                .collect(),
            Some(n) => {
                let oldest = inner.history.front().map_or(inner.rv, |e| e.rv);
                if n + 1 < oldest && n < inner.rv {
                    return Err(StoreError::Gone {
                        requested: n,
                        oldest,
                    });
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > n && matches(e))
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            initial,
            live,
            rv: inner.rv,
        })
    }

    fn publish(
        &self,
        inner: &mut Inner,
        kind: EventType,
        r: &'static ResourceKind,
        namespace: &str,
        object: Arc<Value>,
        rv: u64,
    ) {
        let event = Arc::new(WatchEvent {
            rv,
            kind,
            resource: r,
            namespace: if r.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            object,
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(event);
    }
}

/// The objects of one type (in one namespace, or all), by key range: a list
/// costs what it returns, not the size of the whole store.
fn of_kind<'a>(
    inner: &'a Inner,
    r: &'static ResourceKind,
    namespace: Option<&'a str>,
) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a {
    let start: Key = (
        r.group,
        r.plural,
        namespace.unwrap_or("").to_string(),
        String::new(),
    );
    inner
        .objects
        .range(start..)
        .take_while(move |((g, p, ns, _), _)| {
            *g == r.group && *p == r.plural && namespace.is_none_or(|n| n == ns)
        })
}

fn existing(inner: &Inner, r: &ResourceKind, k: &Key) -> Result<Arc<Value>, StoreError> {
    inner
        .objects
        .get(k)
        .cloned()
        .ok_or_else(|| StoreError::NotFound {
            resource: r.qualified(),
            name: k.3.clone(),
        })
}

fn metadata_mut(object: &mut Value) -> Result<&mut serde_json::Map<String, Value>, StoreError> {
    let obj = object
        .as_object_mut()
        .ok_or_else(|| StoreError::Invalid("the object must be a JSON object".into()))?;
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()
        .ok_or_else(|| StoreError::Invalid("metadata must be an object".into()))
}

/// Sets `apiVersion` and `kind` (every object the server returns carries them).
pub fn set_type_meta(object: &mut Value, r: &ResourceKind) {
    if let Some(obj) = object.as_object_mut() {
        obj.insert("apiVersion".into(), json!(r.api_version()));
        obj.insert("kind".into(), json!(r.kind));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployments() -> &'static ResourceKind {
        ResourceKind::find("apps", "v1", "deployments").unwrap()
    }

    fn rv(v: &Value) -> u64 {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn create_get_update_delete_bump_one_counter() {
        let store = Store::new();
        let d = deployments();
        let a = store
            .create(
                d,
                "default",
                json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}}),
            )
            .unwrap();
        assert_eq!(a["kind"], "Deployment");
        assert_eq!(a["apiVersion"], "apps/v1");
        assert_eq!(a["metadata"]["generation"], 1);
        assert_eq!(a["metadata"]["namespace"], "default");
        assert!(a["metadata"]["uid"].is_string());
        let err = store
            .create(d, "default", json!({"metadata": {"name": "web"}}))
            .unwrap_err();
        assert_eq!(err.to_string(), "deployments.apps \"web\" already exists");

        let b = store
            .update(d, "default", "web", |o| {
                o["spec"]["replicas"] = json!(3);
                Ok(())
            })
            .unwrap();
        assert_eq!(b["metadata"]["generation"], 2);
        assert!(rv(&b) > rv(&a));
        // A status-only change keeps the generation.
        let c = store
            .update(d, "default", "web", |o| {
                o["status"] = json!({"replicas": 3});
                Ok(())
            })
            .unwrap();
        assert_eq!(c["metadata"]["generation"], 2);
        // No change, no write.
        let same = store.update(d, "default", "web", |_| Ok(())).unwrap();
        assert_eq!(rv(&same), rv(&c));
        let gone = store.delete(d, "default", "web", None).unwrap();
        assert!(rv(&gone) > rv(&c));
        assert!(store.get(d, "default", "web").is_none());
        assert_eq!(
            store
                .delete(d, "default", "web", None)
                .unwrap_err()
                .to_string(),
            "deployments.apps \"web\" not found"
        );
    }

    #[test]
    fn generate_name_uses_the_kubernetes_alphabet() {
        let store = Store::new();
        let pods = ResourceKind::find("", "v1", "pods").unwrap();
        let p = store
            .create(
                pods,
                "default",
                json!({"metadata": {"generateName": "web-abc-"}}),
            )
            .unwrap();
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-abc-") && name.len() == 13, "{name}");
        assert!(
            name[8..]
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }

    #[tokio::test]
    async fn watch_replays_from_a_version_and_streams_live() {
        let store = Store::new();
        let d = deployments();
        store
            .create(d, "default", json!({"metadata": {"name": "a"}}))
            .unwrap();
        let after_a = store.version();
        store
            .create(d, "other", json!({"metadata": {"name": "b"}}))
            .unwrap();
        store
            .create(d, "default", json!({"metadata": {"name": "c"}}))
            .unwrap();

        let start = store.watch(d, Some("default"), Some(after_a)).unwrap();
        let names: Vec<_> = start
            .initial
            .iter()
            .map(|e| e.object["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("c")]);

        let mut start = store.watch(d, None, None).unwrap();
        assert_eq!(start.initial.len(), 3);
        assert!(start.initial.iter().all(|e| e.kind == EventType::Added));
        store.delete(d, "default", "a", None).unwrap();
        let ev = start.live.recv().await.unwrap();
        assert_eq!(ev.kind, EventType::Deleted);
        assert_eq!(ev.object["metadata"]["name"], "a");
    }

    #[test]
    fn too_old_versions_are_gone() {
        let store = Store::new();
        let d = deployments();
        for i in 0..(HISTORY + 10) {
            store
                .create(d, "default", json!({"metadata": {"name": format!("d{i}")}}))
                .unwrap();
        }
        match store.watch(d, None, Some(2)) {
            Err(StoreError::Gone { requested: 2, .. }) => {}
            other => panic!("expected Gone, got {:?}", other.map(|s| s.rv)),
        }
        assert!(store.watch(d, None, Some(store.version() - 5)).is_ok());
    }

    #[test]
    fn uid_precondition_on_delete() {
        let store = Store::new();
        let d = deployments();
        store
            .create(d, "default", json!({"metadata": {"name": "a"}}))
            .unwrap();
        assert!(matches!(
            store.delete(d, "default", "a", Some("not-the-uid")),
            Err(StoreError::Conflict { .. })
        ));
    }
}
