//! Kubernetes `Status` errors (apimachinery `pkg/api/errors`): the body every
//! failed request gets, which kubectl prints and kube-rs parses.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{resources::ResourceKind, store::StoreError};

/// An API error with its HTTP code, reason and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, ...
    pub reason: &'static str,
    /// Human message.
    pub message: String,
    /// `details` (name, group, kind, causes), when known.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 for an unknown path.
    pub fn not_found_path(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 415 for a body in a format the request does not take (apiserver
    /// `negotiation.NewUnsupportedMediaTypeError`; the `got` part is ours).
    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {} (got {content_type:?})",
                accepted.join(", ")
            ),
        )
    }

    /// 406 when the Accept header lists nothing the server answers in
    /// (apiserver `negotiation.NewNotAcceptableError`).
    pub fn not_acceptable(accepted: &[&str]) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 422 Invalid with field causes: `(field path, message)`.
    pub fn invalid(r: &ResourceKind, name: &str, causes: Vec<(String, String)>) -> Self {
        let summary: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let message = format!(
            "{} \"{}\" is invalid: {}",
            kind_qualified(r),
            name,
            if summary.len() == 1 {
                summary[0].clone()
            } else {
                format!("[{}]", summary.join(", "))
            }
        );
        let mut e = Self::new(422, "Invalid", message);
        e.details = Some(json!({
            "name": name,
            "group": r.group,
            "kind": r.kind,
            "causes": causes.iter().map(|(f, m)| json!({
                "reason": "FieldValueInvalid",
                "message": m,
                "field": f,
            })).collect::<Vec<_>>(),
        }));
        e
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 409 Conflict (a failed precondition).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// 429 from the eviction subresource when a PodDisruptionBudget forbids it.
    pub fn too_many_requests(message: impl Into<String>, causes: Vec<Value>) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.details = Some(json!({ "causes": causes }));
        e
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// Maps a store error for resource `r`.
    pub fn from_store(r: &ResourceKind, e: StoreError) -> Self {
        let details = |name: &str| {
            let mut d = json!({"name": name, "kind": r.plural});
            if !r.group.is_empty() {
                d["group"] = json!(r.group);
            }
            d
        };
        match e {
            StoreError::NotFound { ref name, .. } => {
                let mut err = Self::new(404, "NotFound", e.to_string());
                err.details = Some(details(name));
                err
            }
            StoreError::AlreadyExists { ref name, .. } => {
                let mut err = Self::new(409, "AlreadyExists", e.to_string());
                err.details = Some(details(name));
                err
            }
            StoreError::Conflict { ref name, .. } => {
                let mut err = Self::new(409, "Conflict", e.to_string());
                err.details = Some(details(name));
                err
            }
            StoreError::Invalid(message) => Self::new(422, "Invalid", message),
            StoreError::Gone { .. } => Self::new(410, "Expired", e.to_string()),
        }
    }

    /// The Status object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// `Deployment.apps` as Invalid messages name kinds.
fn kind_qualified(r: &ResourceKind) -> String {
    if r.group.is_empty() {
        r.kind.to_string()
    } else {
        format!("{}.{}", r.kind, r.group)
    }
}

/// The apiserver's `ErrorNegotiated`: a Status whose `details.retryAfterSeconds`
/// is positive also gets a `Retry-After` header with those seconds (the
/// header is what client-go and kube-rs read).
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self
            .details
            .as_ref()
            .and_then(|d| d["retryAfterSeconds"].as_i64())
            .filter(|s| *s > 0);
        let mut response = (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_status().to_string(),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// A successful-delete Status (for kinds other than pods).
pub fn success_status(r: &ResourceKind, name: &str, uid: &Value) -> Value {
    let mut details = json!({"name": name, "kind": r.plural, "uid": uid});
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
