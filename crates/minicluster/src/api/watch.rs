//! Watch streams: one JSON event per line, flushed as it happens. From
//! resourceVersion unset/0 the stream starts with a synthetic ADDED per
//! current object; from N it replays the changes after N (or sends ERROR
//! 410 Expired when N is older than the history). With a selector, an object
//! that stops matching is sent as DELETED and one that starts matching as
//! ADDED. `timeoutSeconds` ends the stream cleanly; bookmarks are sent when
//! allowed; `sendInitialEvents=true` (watch-list) ends the initial events with
//! the `k8s.io/initial-events-end` bookmark.

use std::{
    collections::{HashSet, VecDeque},
    convert::Infallible,
    sync::Arc,
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::{Value, json};
use tokio::{sync::broadcast::error::RecvError, time::Instant};

use super::{ApiResult, ApiState, FieldSelector, LabelSelector, Request, table};
use crate::{
    resources::ResourceKind,
    store::{EventType, StoreError, WatchEvent},
};

/// Default and longest watch duration when the client gives no timeoutSeconds.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

struct Watch {
    r: &'static ResourceKind,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    initial: VecDeque<Arc<WatchEvent>>,
    live: tokio::sync::broadcast::Receiver<Arc<WatchEvent>>,
    store: Arc<crate::store::Store>,
    matching: HashSet<(String, String)>,
    not_matching: HashSet<(String, String)>,
    deadline: Instant,
    bookmarks: bool,
    initial_end_bookmark: Option<u64>,
    table: bool,
    include_object: bool,
    columns_sent: bool,
    last_rv: u64,
    done: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn expired(requested: u64, oldest: u64) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"),
        "reason": "Expired", "code": 410,
    })
}

impl Watch {
    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": self.r.kind, "apiVersion": self.r.api_version(), "metadata": meta}),
        )
    }

    /// Turns a store event into the line this watcher should see, if any.
    fn render(&mut self, ev: &WatchEvent) -> Option<Bytes> {
        if !std::ptr::eq(ev.resource, self.r) {
            return None;
        }
        if let Some(ns) = &self.namespace
            && *ns != ev.namespace
        {
            return None;
        }
        self.last_rv = self.last_rv.max(ev.rv);
        let key = (
            ev.namespace.clone(),
            ev.object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        let matches = self.labels.matches(&ev.object) && self.fields.matches(&ev.object);
        let kind = match (ev.kind, matches) {
            (EventType::Deleted, _) => {
                let was_known_out = self.not_matching.remove(&key);
                let was_in = self.matching.remove(&key);
                if !(matches || was_in) || was_known_out {
                    return None;
                }
                "DELETED"
            }
            (_, true) => {
                self.not_matching.remove(&key);
                if self.matching.insert(key) {
                    if ev.kind == EventType::Modified && !self.labels.is_empty() {
                        "ADDED"
                    } else {
                        ev.kind.as_str()
                    }
                } else {
                    "MODIFIED"
                }
            }
            (_, false) => {
                self.not_matching.insert(key.clone());
                if self.matching.remove(&key) {
                    "DELETED"
                } else {
                    return None;
                }
            }
        };
        let object = if self.table {
            let with_columns = !self.columns_sent;
            self.columns_sent = true;
            table::table(
                self.r,
                &[ev.object.as_ref()],
                ev.rv,
                with_columns,
                self.include_object,
            )
        } else {
            (*ev.object).clone()
        };
        Some(line(kind, &object))
    }

    async fn next_line(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        while let Some(ev) = self.initial.pop_front() {
            if let Some(l) = self.render(&ev) {
                return Some(l);
            }
        }
        if let Some(rv) = self.initial_end_bookmark.take() {
            return Some(self.bookmark(rv, true));
        }
        loop {
            let bookmark_at = Instant::now() + BOOKMARK_EVERY;
            tokio::select! {
                () = tokio::time::sleep_until(self.deadline) => {
                    self.done = true;
                    return None;
                }
                () = tokio::time::sleep_until(bookmark_at), if self.bookmarks => {
                    let rv = self.store.version();
                    return Some(self.bookmark(rv, false));
                }
                received = self.live.recv() => match received {
                    Ok(ev) => {
                        if let Some(l) = self.render(&ev) {
                            return Some(l);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Too slow to keep up: make the client re-list.
                        self.done = true;
                        return Some(line("ERROR", &expired(self.last_rv, self.store.version())));
                    }
                    Err(RecvError::Closed) => {
                        self.done = true;
                        return None;
                    }
                },
            }
        }
    }
}

pub(super) fn serve(state: &Arc<ApiState>, req: &Request) -> ApiResult {
    let (labels, fields) = req.selectors()?;
    let since: Option<u64> = req
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok());
    let send_initial = req.query.flag("sendInitialEvents");
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let namespace = req.namespace.clone().filter(|_| req.r.namespaced);
    let start_from = if send_initial { None } else { since };
    let headers = [(header::CONTENT_TYPE, "application/json")];
    let start = match state.store.watch(req.r, namespace.as_deref(), start_from) {
        Ok(start) => start,
        Err(StoreError::Gone { requested, oldest }) => {
            let body = line("ERROR", &expired(requested, oldest));
            return Ok((StatusCode::OK, headers, body).into_response());
        }
        Err(e) => return Err(super::ApiError::from_store(req.r, e)),
    };
    let watch = Watch {
        r: req.r,
        namespace,
        labels,
        fields,
        initial: start.initial.into_iter().collect(),
        live: start.live,
        store: state.store.clone(),
        matching: HashSet::new(),
        not_matching: HashSet::new(),
        deadline: Instant::now() + timeout,
        bookmarks: req.query.flag("allowWatchBookmarks"),
        initial_end_bookmark: send_initial.then_some(start.rv),
        table: table::wants_table(req.accept()),
        include_object: table::include_object(req.query.get("includeObject")),
        columns_sent: false,
        last_rv: start.rv,
        done: false,
    };
    let body = Body::from_stream(stream_of(watch));
    Ok((StatusCode::OK, headers, body).into_response())
}

// A stream whose state is the Watch itself.
fn stream_of(watch: Watch) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(watch, |mut w| async move {
        let l = w.next_line().await?;
        Some((Ok(l), w))
    })
}
