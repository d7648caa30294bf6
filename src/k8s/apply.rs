//! Putting the manifests in place (server-side apply, field manager
//! `rolltest`, force) and taking them away again.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Pod},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams, PropagationPolicy,
    },
    discovery::{ApiCapabilities, Scope},
};
use serde_json::Value;

use super::{Cluster, K8sError, selector_string, status_code};

/// The field manager of everything rolltest applies.
pub const FIELD_MANAGER: &str = "rolltest";

/// One object [`apply`] put in place.
#[derive(Debug, Clone)]
pub struct AppliedObject {
    /// `Deployment`.
    pub kind: String,
    /// `apps/v1`.
    pub api_version: String,
    /// `metadata.name`.
    pub name: String,
    /// The namespace it went to.
    pub namespace: String,
    /// The API resource (for dynamic calls).
    pub resource: ApiResource,
    /// Whether the server created it (false: it existed and was updated).
    pub created: bool,
}

impl AppliedObject {
    /// `Deployment/api`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Creates the cluster's namespace when it does not exist yet; returns
/// whether it did. For the embedded cluster, which rolltest started with only
/// `default` and the `kube-*` namespaces: a real cluster's namespaces are its
/// owner's to make (there a missing one fails the apply, as for `kubectl apply -n`).
pub async fn ensure_namespace(cluster: &Cluster) -> Result<bool, K8sError> {
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    let name = cluster.namespace.clone();
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| cluster.err(format!("read namespace {name}"), e))?;
    if existing.is_some() {
        return Ok(false);
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    api.create(&PostParams::default(), &namespace)
        .await
        .map_err(|e| cluster.err(format!("create namespace {name}"), e))?;
    Ok(true)
}

/// What [`teardown`] removed.
#[derive(Debug, Clone, Default)]
pub struct TeardownReport {
    /// Objects deleted (`Kind/name`).
    pub deleted: Vec<String>,
    /// Objects already gone.
    pub already_gone: Vec<String>,
    /// Pods waited for until they were gone.
    pub pods_waited: usize,
}

fn str_at<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = doc;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

/// Server-side applies each document, in order, into the cluster's namespace
/// unless a document names its own. Refuses unknown and cluster-scoped kinds
/// before touching anything.
pub async fn apply(cluster: &Cluster, docs: &[Value]) -> Result<Vec<AppliedObject>, K8sError> {
    // Resolve every kind first, so a bad manifest changes nothing.
    let mut resolved: HashMap<(String, String), (ApiResource, ApiCapabilities)> = HashMap::new();
    let mut plan = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let index = i + 1;
        let kind = str_at(doc, &["kind"]).unwrap_or_default().to_string();
        let name = str_at(doc, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        let invalid = |message: &str| K8sError::InvalidManifest {
            index,
            name: format!(
                "{}/{}",
                if kind.is_empty() { "?" } else { &kind },
                if name.is_empty() { "?" } else { &name }
            ),
            message: message.to_string(),
        };
        if !doc.is_object() {
            return Err(invalid("is not an object"));
        }
        let Some(api_version) = str_at(doc, &["apiVersion"]).filter(|s| !s.is_empty()) else {
            return Err(invalid("has no apiVersion"));
        };
        if kind.is_empty() {
            return Err(invalid("has no kind"));
        }
        if name.is_empty() {
            return Err(invalid(
                "has no metadata.name (generateName cannot be applied)",
            ));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let key = (api_version.to_string(), kind.clone());
        if !resolved.contains_key(&key) {
            let gvk = GroupVersionKind::gvk(&group, &version, &kind);
            let found = match kube::discovery::pinned_kind(&cluster.client, &gvk).await {
                Ok(found) => found,
                Err(kube::Error::Discovery(_)) => {
                    return Err(K8sError::UnknownKind {
                        index,
                        api_version: api_version.to_string(),
                        kind,
                        name,
                    });
                }
                Err(e) if status_code(&e) == Some(404) => {
                    return Err(K8sError::UnknownKind {
                        index,
                        api_version: api_version.to_string(),
                        kind,
                        name,
                    });
                }
                Err(e) => {
                    return Err(cluster.err(format!("discover {kind} in {api_version}"), e));
                }
            };
            resolved.insert(key.clone(), found);
        }
        let (resource, caps) = &resolved[&key];
        if caps.scope != Scope::Namespaced {
            return Err(K8sError::ClusterScoped { index, kind, name });
        }
        let namespace = str_at(doc, &["metadata", "namespace"])
            .filter(|s| !s.is_empty())
            .unwrap_or(&cluster.namespace)
            .to_string();
        plan.push(AppliedObject {
            kind,
            api_version: api_version.to_string(),
            name,
            namespace,
            resource: resource.clone(),
            created: false,
        });
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::with_capacity(plan.len());
    for (mut object, doc) in plan.into_iter().zip(docs) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), &object.namespace, &object.resource);
        let existed = match api.get_opt(&object.name).await {
            Ok(o) => o.is_some(),
            Err(e) => {
                return Err(cluster.err(
                    format!("get {} in namespace {}", object.display(), object.namespace),
                    e,
                ));
            }
        };
        api.patch(&object.name, &params, &Patch::Apply(doc))
            .await
            .map_err(|e| {
                cluster.err(
                    format!(
                        "apply {} in namespace {}",
                        object.display(),
                        object.namespace
                    ),
                    e,
                )
            })?;
        object.created = !existed;
        applied.push(object);
    }
    Ok(applied)
}

/// Deletes the objects in reverse order (Deployments with foreground
/// propagation, so their pods go too), then waits up to `timeout` for the
/// Deployments' pods to be gone from the API.
pub async fn teardown(
    cluster: &Cluster,
    objects: &[AppliedObject],
    timeout: Duration,
) -> Result<TeardownReport, K8sError> {
    let mut report = TeardownReport::default();
    // (namespace, selector) of each deleted Deployment's pods.
    let mut pod_sets = Vec::new();
    for object in objects.iter().rev() {
        let is_deployment = object.kind == "Deployment" && object.resource.group == "apps";
        if is_deployment {
            let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &object.namespace);
            if let Ok(Some(d)) = api.get_opt(&object.name).await
                && let Some(spec) = &d.spec
            {
                pod_sets.push((object.namespace.clone(), selector_string(&spec.selector)));
            }
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), &object.namespace, &object.resource);
        let params = DeleteParams {
            propagation_policy: Some(if is_deployment {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            }),
            ..DeleteParams::default()
        };
        match api.delete(&object.name, &params).await {
            Ok(_) => report.deleted.push(object.display()),
            Err(e) if status_code(&e) == Some(404) => report.already_gone.push(object.display()),
            Err(e) => {
                return Err(cluster.err(
                    format!(
                        "delete {} in namespace {}",
                        object.display(),
                        object.namespace
                    ),
                    e,
                ));
            }
        }
    }
    let deadline = Instant::now() + timeout;
    for (namespace, selector) in pod_sets {
        if selector.is_empty() {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
        let lp = ListParams::default().labels(&selector);
        let mut most = 0;
        loop {
            let pods = api.list(&lp).await.map_err(|e| {
                cluster.err(format!("list pods {selector} in namespace {namespace}"), e)
            })?;
            most = most.max(pods.items.len());
            if pods.items.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = pods
                    .items
                    .iter()
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                return Err(K8sError::Timeout {
                    what: format!("the pods of {selector} to be deleted"),
                    waited: timeout,
                    missing: format!("{} pods remain: {}", names.len(), names.join(", ")),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        report.pods_waited += most;
    }
    Ok(report)
}
