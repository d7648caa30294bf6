//! The API server's HTTP surface (axum): discovery, and for every resource
//! list / watch / get / create / replace / patch / delete, the `status` and
//! `scale` subresources, pod eviction, Table output and Status errors — the
//! subset kube-rs and `kubectl` 1.27–1.33 use.

mod delete;
mod discovery;
mod event;
mod evict;
mod patch;
mod proto;
mod read;
mod scale;
mod select;
mod status;
mod table;
mod validate;
mod watch;
mod write;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use serde_json::{Value, json};

pub use patch::{PatchKind, strategic_merge};
pub use select::{FieldSelector, LabelSelector};
pub use status::ApiError;
pub use table::pod_status;

pub(crate) use delete::delete_pod;
pub use delete::graceful_delete_pod;
use delete::{delete, delete_collection, pods_kind};
pub use event::{record_event, record_legacy_event};
use read::{get_one, list, logs};
use scale::scale;
use write::{WriteError, create, replace};

/// The Kubernetes minor version the server reports in `/version`.
pub fn discovery_minor() -> &'static str {
    discovery::MINOR
}

use super::{resources::ResourceKind, store::Store};

/// Finds a pod's log file: (namespace, pod) → path (the kubelet's index).
pub type LogLookup = Arc<dyn Fn(&str, &str) -> Option<std::path::PathBuf> + Send + Sync>;

/// Shared state of the API server.
pub struct ApiState {
    /// The objects.
    pub store: Arc<Store>,
    /// `host:port` clients reach the server at (for `/api`), once bound.
    pub server_address: std::sync::OnceLock<String>,
    /// Where pod logs are (set when a kubelet runs).
    pub logs: std::sync::OnceLock<LogLookup>,
    /// Allocated Service addresses and node ports.
    allocations: Mutex<Allocations>,
}

#[derive(Default)]
struct Allocations {
    node_ports: Vec<i64>,
}

impl ApiState {
    /// State over a store.
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(ApiState {
            store,
            server_address: std::sync::OnceLock::new(),
            logs: std::sync::OnceLock::new(),
            allocations: Mutex::new(Allocations::default()),
        })
    }

    /// The next Service address: loopback 127.3.X.Y, so the embedded service
    /// proxy can listen on it and no traffic ever leaves the machine. Counted
    /// process-wide and skipping addresses already in use, so two clusters
    /// (in this process or another) do not collide.
    fn allocate_cluster_ip(&self, ports: &[u16]) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mut ip = String::new();
        for _ in 0..65_000 {
            // Each process starts in its own /24 (by pid), so clusters of
            // two processes started together do not race for one address.
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + (std::process::id() % 256) * 254;
            ip = format!("127.3.{}.{}", (n / 254) % 256, n % 254 + 1);
            let free = ports
                .iter()
                .all(|p| std::net::TcpListener::bind((ip.as_str(), *p)).is_ok());
            if free {
                break;
            }
        }
        ip
    }

    fn allocate_node_port(&self) -> i64 {
        let mut a = self.allocations.lock().unwrap_or_else(|e| e.into_inner());
        let used = &a.node_ports;
        // Skip ports taken here or by anyone else on this machine.
        let port = (30000..=32767)
            .find(|p| {
                !used.contains(p)
                    && u16::try_from(*p)
                        .is_ok_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
            })
            .unwrap_or(32767);
        a.node_ports.push(port);
        port
    }
}

type ApiResult = Result<Response, ApiError>;

/// The router. Serve it over HTTPS with authentication (see `super::server`).
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/version", get(|| async { json_ok(&discovery::version()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/api",
            get(|State(s): State<Arc<ApiState>>| async move {
                json_ok(&discovery::core_versions(
                    s.server_address.get().map_or("127.0.0.1", String::as_str),
                ))
            }),
        )
        .route("/apis", get(|| async { json_ok(&discovery::groups()) }))
        .route(
            "/openapi/v3",
            get(|| async { json_ok(&discovery::openapi_v3_root()) }),
        )
        .route(
            "/openapi/v3/{*path}",
            get(|Path(path): Path<String>| async move {
                discovery::openapi_v3_group(&path)
                    .map(|d| json_ok(&d))
                    .ok_or_else(|| ApiError::not_found_path(&format!("/openapi/v3/{path}")))
            }),
        )
        .route("/api/{*rest}", any(resource_api))
        .route("/apis/{*rest}", any(resource_api))
        .fallback(|uri: axum::http::Uri| async move { ApiError::not_found_path(uri.path()) })
        .with_state(state)
}

/// A JSON 200 response.
pub fn json_ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Query parameters (last value wins).
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// The media types object bodies may come in.
const BODY_MEDIA_TYPES: &[&str] = &["application/json", proto::MEDIA_TYPE];

/// The media types responses come in.
const RESPONSE_MEDIA_TYPES: &[&str] = &["application/json", "application/json;stream=watch"];

/// A Content-Type or Accept entry without its parameters, lower case.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether an Accept header lets the server answer in JSON: no header, or an
/// entry for JSON (Table and watch parameters included) or a wildcard.
/// kubectl's typed clients send `application/vnd.kubernetes.protobuf,
/// application/json` and decode by the response's Content-Type (client-go
/// `rest.Request.transformResponse`), so JSON is a fine answer to them.
fn accepts_json(accept: &str) -> bool {
    accept.trim().is_empty()
        || accept.split(',').any(|entry| {
            matches!(
                media_type(entry).as_str(),
                "application/json" | "application/*" | "*/*"
            )
        })
}

/// What a request addresses.
struct Request<'a> {
    r: &'static ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    method: Method,
    query: Query,
    headers: &'a HeaderMap,
    body: Bytes,
}

/// Every `/api/...` and `/apis/...` request: the group, version and the
/// rest of the path decide what it addresses.
async fn resource_api(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: axum::http::Uri,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = uri.path();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, tail) = match segs.as_slice() {
        ["api", "v1", tail @ ..] => ("", "v1", tail),
        ["apis", group] => return api_group(group, path),
        ["apis", group, version, tail @ ..] => (*group, *version, tail),
        _ => return Err(ApiError::not_found_path(path)),
    };
    let incoming = Incoming {
        method,
        raw_query,
        headers: &headers,
        body,
    };
    route(&state, group, version, tail, incoming)
}

/// `/apis/GROUP`.
fn api_group(group: &str, path: &str) -> ApiResult {
    let (_, version) = ResourceKind::groups()
        .into_iter()
        .find(|(g, _)| g == &group)
        .ok_or_else(|| ApiError::not_found_path(path))?;
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    Ok(json_ok(&json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": [gv.clone()], "preferredVersion": gv,
    })))
}

/// The parts of a request besides its path.
struct Incoming<'a> {
    method: Method,
    raw_query: Option<String>,
    headers: &'a HeaderMap,
    body: Bytes,
}

fn route(
    state: &Arc<ApiState>,
    group: &str,
    version: &str,
    tail: &[&str],
    incoming: Incoming,
) -> ApiResult {
    let path = || {
        let prefix = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/{version}")
        };
        format!("{prefix}/{}", tail.join("/"))
    };
    if tail.is_empty() {
        return discovery::resources(group, version)
            .map(|d| json_ok(&d))
            .ok_or_else(|| ApiError::not_found_path(&path()));
    }
    let (namespace, rest) = match tail {
        ["namespaces", ns, plural, rest @ ..]
            if ResourceKind::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            (Some(ns.to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(rest);
                v
            })
        }
        _ => (None, tail.to_vec()),
    };
    let r = ResourceKind::find(group, version, rest[0])
        .ok_or_else(|| ApiError::not_found_path(&path()))?;
    if rest.len() > 3 || (r.namespaced && rest.len() > 1 && namespace.is_none()) {
        return Err(ApiError::not_found_path(&path()));
    }
    let req = Request {
        r,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
        method: incoming.method,
        query: Query::parse(incoming.raw_query.as_deref()),
        headers: incoming.headers,
        body: incoming.body,
    };
    if let Some(sub) = &req.sub
        && r.subresource(sub).is_none()
    {
        return Err(ApiError::not_found_path(&path()));
    }
    // Logs are text/plain whatever the client asks for.
    if req.sub.as_deref() != Some("log") && !accepts_json(req.accept()) {
        return Err(ApiError::not_acceptable(RESPONSE_MEDIA_TYPES));
    }
    match (&req.name, &req.sub, req.method.clone()) {
        (None, _, Method::GET) if req.query.flag("watch") => watch::serve(state, &req),
        (None, _, Method::GET) => list(state, &req),
        (None, _, Method::POST) => create(state, &req),
        (None, _, Method::DELETE) => delete_collection(state, &req),
        (Some(_), None, Method::GET) => get_one(state, &req),
        (Some(_), None, Method::PUT) => replace(state, &req, false),
        (Some(_), None, Method::PATCH) => write::patch(state, &req, false),
        (Some(_), None, Method::DELETE) => delete(state, &req),
        (Some(_), Some(s), m) if s == "status" => match m {
            Method::GET => get_one(state, &req),
            Method::PUT => replace(state, &req, true),
            Method::PATCH => write::patch(state, &req, true),
            _ => Err(ApiError::method_not_allowed(
                "only get, update and patch on status",
            )),
        },
        (Some(_), Some(s), m) if s == "scale" => scale(state, &req, m),
        (Some(_), Some(s), Method::POST) if s == "eviction" => evict::evict(state, &req),
        (Some(_), Some(s), Method::GET) if s == "log" => logs(state, &req),
        _ => Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {}",
            req.method,
            path()
        ))),
    }
}

impl Request<'_> {
    fn ns(&self) -> &str {
        if self.r.namespaced {
            self.namespace.as_deref().unwrap_or("default")
        } else {
            ""
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn accept(&self) -> &str {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// A JSON body (patches: their Content-Type names the patch type).
    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The object a create, update, eviction or delete carries, as JSON:
    /// sent as JSON (also when no Content-Type is given, as the API server
    /// assumes) or as Kubernetes protobuf, what kubectl's typed clients send.
    /// Anything else is 415 Unsupported Media Type.
    fn object_body(&self) -> Result<Value, ApiError> {
        let ct = self.content_type();
        match media_type(ct).as_str() {
            "" | "application/json" => self.json_body(),
            proto::MEDIA_TYPE => proto::decode(&self.body).map_err(|e| match e {
                proto::ProtoError::Schema(_) => ApiError::internal(e.to_string()),
                e => ApiError::bad_request(format!(
                    "the protobuf request body could not be decoded: {e}"
                )),
            }),
            _ => Err(ApiError::unsupported_media_type(ct, BODY_MEDIA_TYPES)),
        }
    }

    /// `object_body`, or `null` when there is no body (deletes, evictions).
    fn optional_object_body(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            Ok(Value::Null)
        } else {
            self.object_body()
        }
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        Ok((labels, fields))
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some()
    }

    /// `fieldValidation=Strict` (kubectl's default when the server supports it).
    fn strict(&self) -> bool {
        self.query.get("fieldValidation") == Some("Strict")
    }
}
