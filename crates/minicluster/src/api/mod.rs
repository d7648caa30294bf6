//! The API server's HTTP surface (axum): discovery, and for every resource
//! list / watch / get / create / replace / patch / delete, the `status` and
//! `scale` subresources, pod eviction, Table output and Status errors — the
//! subset kube-rs and `kubectl` 1.27–1.33 use.

mod discovery;
mod evict;
mod patch;
mod select;
mod status;
mod table;
mod validate;
mod watch;

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

/// The Kubernetes minor version the server reports in `/version`.
pub fn discovery_minor() -> &'static str {
    discovery::MINOR
}

use super::{
    resources::ResourceKind,
    store::{Store, now_rfc3339},
};

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
    match (&req.name, &req.sub, req.method.clone()) {
        (None, _, Method::GET) if req.query.flag("watch") => watch::serve(state, &req),
        (None, _, Method::GET) => list(state, &req),
        (None, _, Method::POST) => create(state, &req),
        (None, _, Method::DELETE) => delete_collection(state, &req),
        (Some(_), None, Method::GET) => get_one(state, &req),
        (Some(_), None, Method::PUT) => replace(state, &req, false),
        (Some(_), None, Method::PATCH) => patch(state, &req, false),
        (Some(_), None, Method::DELETE) => delete(state, &req),
        (Some(_), Some(s), m) if s == "status" => match m {
            Method::GET => get_one(state, &req),
            Method::PUT => replace(state, &req, true),
            Method::PATCH => patch(state, &req, true),
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

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
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

/// `GET pods/NAME/log` (`kubectl logs`): the container's output as the
/// kubelet wrote it; `tailLines` honoured.
fn logs(state: &ApiState, req: &Request) -> ApiResult {
    let pods = pods_kind()?;
    state
        .store
        .require(pods, req.ns(), req.name())
        .map_err(|e| ApiError::from_store(pods, e))?;
    let path = state
        .logs
        .get()
        .and_then(|lookup| lookup(req.ns(), req.name()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "container in pod \"{}\" has not started",
                req.name()
            ))
        })?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let text = match req
        .query
        .get("tailLines")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut tail = lines[lines.len().saturating_sub(n)..].join("\n");
            tail.push('\n');
            tail
        }
        None => text,
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

fn respond_object(req: &Request, code: StatusCode, object: &Value) -> Response {
    if table::wants_table(req.accept()) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let include = table::include_object(req.query.get("includeObject"));
        return json_response(code, &table::table(req.r, &[object], rv, true, include));
    }
    json_response(code, object)
}

fn list(state: &ApiState, req: &Request) -> ApiResult {
    let (labels, fields) = req.selectors()?;
    let (items, rv) = state
        .store
        .list(req.r, req.namespace.as_deref().filter(|_| req.r.namespaced));
    let items: Vec<&Value> = items
        .iter()
        .map(|a| a.as_ref())
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    if table::wants_table(req.accept()) {
        let include = table::include_object(req.query.get("includeObject"));
        return Ok(json_ok(&table::table(req.r, &items, rv, true, include)));
    }
    Ok(json_ok(&json!({
        "kind": req.r.list_kind(),
        "apiVersion": req.r.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })))
}

fn get_one(state: &ApiState, req: &Request) -> ApiResult {
    let obj = state
        .store
        .require(req.r, req.ns(), req.name())
        .map_err(|e| ApiError::from_store(req.r, e))?;
    Ok(respond_object(req, StatusCode::OK, &obj))
}

fn require_namespace(state: &ApiState, req: &Request) -> Result<(), ApiError> {
    if req.r.namespaced {
        let ns_kind = ResourceKind::find("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
        state
            .store
            .require(ns_kind, "", req.ns())
            .map_err(|e| ApiError::from_store(ns_kind, e))?;
    }
    Ok(())
}

/// Server-side fields of a new object: Service addresses and node ports.
fn allocate(state: &ApiState, r: &ResourceKind, obj: &mut Value) {
    if r.kind != "Service" {
        return;
    }
    if obj["spec"]["clusterIP"].as_str().is_none_or(str::is_empty) {
        let ports: Vec<u16> = obj["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .collect();
        let ip = state.allocate_cluster_ip(&ports);
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    }
    if matches!(
        obj["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    ) && let Some(ports) = obj["spec"]["ports"].as_array_mut()
    {
        for p in ports {
            if p["nodePort"].is_null() {
                p["nodePort"] = json!(state.allocate_node_port());
            }
        }
    }
}

fn create(state: &ApiState, req: &Request) -> ApiResult {
    let mut obj = req.json_body()?;
    check_kind(req.r, &obj)?;
    if let (Some(body_ns), true) = (obj["metadata"]["namespace"].as_str(), req.r.namespaced)
        && !body_ns.is_empty()
        && body_ns != req.ns()
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the request ({body_ns} vs {})",
            req.ns()
        )));
    }
    require_namespace(state, req)?;
    validate::check_types(req.r, &obj)?;
    if req.strict() {
        validate::check_unknown_fields(req.r, &obj)?;
    }
    validate::apply_defaults(req.r, &mut obj);
    validate::validate(req.r, &obj)?;
    allocate(state, req.r, &mut obj);
    if req.dry_run() {
        return Ok(respond_object(req, StatusCode::CREATED, &obj));
    }
    let created = state
        .store
        .create(req.r, req.ns(), obj)
        .map_err(|e| ApiError::from_store(req.r, e))?;
    Ok(respond_object(req, StatusCode::CREATED, &created))
}

fn check_kind(r: &ResourceKind, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if let Some(kind) = obj["kind"].as_str()
        && kind != r.kind
    {
        return Err(ApiError::bad_request(format!(
            "the body kind {kind:?} does not match the resource {:?}",
            r.kind
        )));
    }
    Ok(())
}

/// Copies the parts of `current` a write to the main resource may not change
/// (status, deletion markers), or for a status write, everything but status.
fn merge_write(r: &ResourceKind, current: &Value, next: &mut Value, status_only: bool) {
    let has_status = r.subresource("status").is_some();
    if status_only {
        let status = next.get("status").cloned();
        *next = current.clone();
        if let Some(status) = status {
            next["status"] = status;
        }
        return;
    }
    if has_status {
        match current.get("status") {
            Some(s) => next["status"] = s.clone(),
            None => {
                if let Some(o) = next.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        match current["metadata"].get(field) {
            Some(v) => next["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
}

fn replace(state: &ApiState, req: &Request, status_only: bool) -> ApiResult {
    let mut body = req.json_body()?;
    check_kind(req.r, &body)?;
    if let Some(n) = body["metadata"]["name"].as_str()
        && n != req.name()
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            req.name()
        )));
    }
    if req.strict() && !status_only {
        validate::check_unknown_fields(req.r, &body)?;
    }
    let want_rv = body["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    let r = req.r;
    let result = state.store.try_update(r, req.ns(), req.name(), |current| {
        check_version(r, req.name(), current, want_rv.as_deref())?;
        merge_write(r, current, &mut body, status_only);
        admit(r, &mut body, status_only)?;
        *current = std::mem::take(&mut body);
        Ok(())
    });
    finish_write(req, result)
}

/// Why a write inside the store's lock was refused: a store error (mapped to
/// a Status for the resource at the end) or a Status decided by the API.
pub(super) enum WriteError {
    Store(super::store::StoreError),
    Api(ApiError),
}

impl From<super::store::StoreError> for WriteError {
    fn from(e: super::store::StoreError) -> Self {
        WriteError::Store(e)
    }
}

impl From<ApiError> for WriteError {
    fn from(e: ApiError) -> Self {
        WriteError::Api(e)
    }
}

impl WriteError {
    pub(super) fn into_api(self, r: &ResourceKind) -> ApiError {
        match self {
            WriteError::Store(e) => ApiError::from_store(r, e),
            WriteError::Api(e) => e,
        }
    }
}

/// The conflict a stale `metadata.resourceVersion` precondition produces.
fn check_version(
    r: &ResourceKind,
    name: &str,
    current: &Value,
    want: Option<&str>,
) -> Result<(), WriteError> {
    match want {
        Some(want) if current["metadata"]["resourceVersion"].as_str() != Some(want) => {
            Err(WriteError::Store(super::store::StoreError::Conflict {
                resource: r.qualified(),
                name: name.to_string(),
            }))
        }
        _ => Ok(()),
    }
}

/// The response for a write's result.
fn finish_write(req: &Request, result: Result<Arc<Value>, WriteError>) -> ApiResult {
    let obj = result.map_err(|e| e.into_api(req.r))?;
    Ok(respond_object(req, StatusCode::OK, &obj))
}

/// Runs the admission checks inside a store update: an error aborts the write.
fn admit(r: &ResourceKind, obj: &mut Value, status_only: bool) -> Result<(), ApiError> {
    if status_only {
        return Ok(());
    }
    validate::check_types(r, obj)?;
    validate::apply_defaults(r, obj);
    validate::validate(r, obj)
}

fn patch(state: &ApiState, req: &Request, status_only: bool) -> ApiResult {
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind =
        PatchKind::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
    let patch_body = req.json_body()?;
    let r = req.r;
    let name = req.name().to_string();
    let strict = req.strict();
    if kind == PatchKind::Apply && state.store.get(r, req.ns(), req.name()).is_none() {
        // Server-side apply of a missing object creates it.
        let mut obj = patch_body;
        obj["metadata"]["name"] = json!(name);
        require_namespace(state, req)?;
        validate::check_types(r, &obj)?;
        validate::apply_defaults(r, &mut obj);
        validate::validate(r, &obj)?;
        allocate(state, r, &mut obj);
        let created = state
            .store
            .create(r, req.ns(), obj)
            .map_err(|e| ApiError::from_store(r, e))?;
        return Ok(respond_object(req, StatusCode::CREATED, &created));
    }
    let result = state.store.try_update(r, req.ns(), req.name(), |current| {
        check_version(
            r,
            &name,
            current,
            patch_body["metadata"]["resourceVersion"].as_str(),
        )?;
        let mut next = current.clone();
        patch::apply(kind, &mut next, &patch_body).map_err(ApiError::bad_request)?;
        merge_write(r, current, &mut next, status_only);
        if strict && !status_only {
            validate::check_unknown_fields(r, &next)?;
        }
        admit(r, &mut next, status_only)?;
        *current = next;
        Ok(())
    });
    finish_write(req, result)
}

/// Seconds of grace for a pod delete (the API server's rules: kubernetes/kubernetes
/// pkg/registry/core/pod/strategy.go `CheckGracefulDelete`).
fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || terminal {
        return 0;
    }
    let grace = requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if grace < 0 { 1 } else { grace }
}

/// Deletes a pod the way the API server does: gracefully (deletionTimestamp
/// = now + grace, the kubelet finishes it) unless the grace is 0.
pub(crate) fn delete_pod(
    state: &ApiState,
    namespace: &str,
    name: &str,
    requested_grace: Option<i64>,
    uid: Option<&str>,
) -> Result<Arc<Value>, ApiError> {
    let pods = pods_kind()?;
    graceful_delete_pod(&state.store, namespace, name, requested_grace, uid)
        .map_err(|e| ApiError::from_store(pods, e))
}

/// The store-level graceful pod delete, shared by the API and the controllers.
pub fn graceful_delete_pod(
    store: &Store,
    namespace: &str,
    name: &str,
    requested_grace: Option<i64>,
    uid: Option<&str>,
) -> Result<Arc<Value>, super::store::StoreError> {
    let pods = ResourceKind::find("", "v1", "pods")
        .ok_or_else(|| super::store::StoreError::Invalid("no pods resource".into()))?;
    let current = store.require(pods, namespace, name)?;
    if let Some(uid) = uid
        && current["metadata"]["uid"].as_str() != Some(uid)
    {
        return Err(super::store::StoreError::Conflict {
            resource: "pods".into(),
            name: name.into(),
        });
    }
    let grace = pod_grace(&current, requested_grace);
    if grace == 0 {
        return store.delete(pods, namespace, name, uid);
    }
    store.update(pods, namespace, name, |pod| {
        let now = std::time::SystemTime::now();
        let deadline =
            humantime::format_rfc3339_seconds(now + std::time::Duration::from_secs(grace as u64))
                .to_string();
        match pod["metadata"]["deletionGracePeriodSeconds"].as_i64() {
            // A later delete may only shorten the grace.
            Some(existing) if existing <= grace => {}
            _ => {
                pod["metadata"]["deletionTimestamp"] = json!(deadline);
                pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            }
        }
        Ok(())
    })
}

fn pods_kind() -> Result<&'static ResourceKind, ApiError> {
    ResourceKind::find("", "v1", "pods").ok_or_else(|| ApiError::internal("no pods resource"))
}

fn delete_options(req: &Request) -> (Option<i64>, Option<String>) {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let grace = req
        .query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| body["gracePeriodSeconds"].as_i64());
    let uid = body["preconditions"]["uid"].as_str().map(str::to_string);
    (grace, uid)
}

fn delete(state: &ApiState, req: &Request) -> ApiResult {
    let (grace, uid) = delete_options(req);
    if req.r.kind == "Pod" {
        let pod = delete_pod(state, req.ns(), req.name(), grace, uid.as_deref())?;
        return Ok(json_ok(&pod));
    }
    let gone = state
        .store
        .delete(req.r, req.ns(), req.name(), uid.as_deref())
        .map_err(|e| ApiError::from_store(req.r, e))?;
    Ok(json_ok(&status::success_status(
        req.r,
        req.name(),
        &gone["metadata"]["uid"],
    )))
}

fn delete_collection(state: &ApiState, req: &Request) -> ApiResult {
    let (labels, fields) = req.selectors()?;
    let (items, _) = state.store.list(req.r, req.namespace.as_deref());
    let (grace, _) = delete_options(req);
    for o in items
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
    {
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let name = o["metadata"]["name"].as_str().unwrap_or("");
        let result = if req.r.kind == "Pod" {
            delete_pod(state, ns, name, grace, None).map(|_| ())
        } else {
            state
                .store
                .delete(req.r, ns, name, None)
                .map(|_| ())
                .map_err(|e| ApiError::from_store(req.r, e))
        };
        match result {
            Ok(()) | Err(ApiError { code: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_ok(
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    ))
}

fn scale_object(o: &Value) -> Value {
    let selector = o["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": o["metadata"]["name"],
            "namespace": o["metadata"]["namespace"],
            "uid": o["metadata"]["uid"],
            "resourceVersion": o["metadata"]["resourceVersion"],
            "creationTimestamp": o["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": o["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

fn scale(state: &ApiState, req: &Request, method: Method) -> ApiResult {
    let r = req.r;
    match method {
        Method::GET => {
            let o = state
                .store
                .require(r, req.ns(), req.name())
                .map_err(|e| ApiError::from_store(r, e))?;
            Ok(json_ok(&scale_object(&o)))
        }
        Method::PUT | Method::PATCH => {
            let body = req.json_body()?;
            let kind = if method == Method::PUT {
                None
            } else {
                let ct = req
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                Some(
                    PatchKind::from_content_type(ct)
                        .ok_or_else(|| ApiError::unsupported_media_type(ct))?,
                )
            };
            let result = state.store.try_update(r, req.ns(), req.name(), |current| {
                let mut s = scale_object(current);
                match kind {
                    None => {
                        check_version(
                            r,
                            req.name(),
                            current,
                            body["metadata"]["resourceVersion"].as_str(),
                        )?;
                        s = body.clone();
                    }
                    Some(k) => patch::apply(k, &mut s, &body).map_err(ApiError::bad_request)?,
                }
                let replicas = s["spec"]["replicas"].as_i64().unwrap_or(0);
                if replicas < 0 {
                    return Err(WriteError::Api(ApiError::invalid(
                        r,
                        req.name(),
                        vec![(
                            "spec.replicas".into(),
                            format!(
                                "Invalid value: {replicas}: must be greater than or equal to 0"
                            ),
                        )],
                    )));
                }
                current["spec"]["replicas"] = json!(replicas);
                Ok(())
            });
            let o = result.map_err(|e| e.into_api(r))?;
            Ok(json_ok(&scale_object(&o)))
        }
        _ => Err(ApiError::method_not_allowed(
            "only get, update and patch on scale",
        )),
    }
}

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
    let Some(events) = ResourceKind::find("", "v1", "events") else {
        return;
    };
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
    if let Some(fp) = field_path {
        involved_ref["fieldPath"] = json!(fp);
    }
    let event = json!({
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": involved_ref,
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": super::store::now_rfc3339_micros(),
        "count": 1,
        "type": type_,
        "reportingComponent": component,
        "reportingInstance": component,
    });
    let _ = store.create(events, ns, event);
}
