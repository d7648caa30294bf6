//! The resource types the embedded API server serves: one static table that
//! drives discovery, routing, Status messages and scoping.

/// A subresource of a resource (`pods/eviction`, `deployments/scale`, ...).
#[derive(Debug)]
pub struct Subresource {
    /// Name after the slash.
    pub name: &'static str,
    /// Kind of the subresource's object.
    pub kind: &'static str,
    /// Group of that kind, when it differs from the parent's (`policy` for evictions).
    pub group: Option<&'static str>,
    /// Version of that kind, when it differs.
    pub version: Option<&'static str>,
    /// Verbs.
    pub verbs: &'static [&'static str],
}

/// One resource type.
#[derive(Debug)]
pub struct ResourceKind {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural name used in URLs.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// kubectl categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [Subresource],
}

const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// The `status` subresource of a kind.
const fn status(kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        kind,
        group: None,
        version: None,
        verbs: STATUS_VERBS,
    }
}

/// The `scale` subresource (autoscaling/v1 Scale).
const SCALE: Subresource = Subresource {
    name: "scale",
    kind: "Scale",
    group: Some("autoscaling"),
    version: Some("v1"),
    verbs: STATUS_VERBS,
};

/// Every resource the server knows, in discovery order.
pub static RESOURCES: &[ResourceKind] = &[
    ResourceKind {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        verbs: RW,
        categories: &[],
        subresources: &[status("Namespace")],
    },
    ResourceKind {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        verbs: RW,
        categories: &[],
        subresources: &[status("Node")],
    },
    ResourceKind {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        verbs: RW,
        categories: &["all"],
        subresources: &[
            status("Pod"),
            Subresource {
                name: "eviction",
                kind: "Eviction",
                group: Some("policy"),
                version: Some("v1"),
                verbs: &["create"],
            },
            Subresource {
                name: "log",
                kind: "Pod",
                group: None,
                version: None,
                verbs: &["get"],
            },
        ],
    },
    ResourceKind {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        verbs: RW,
        categories: &["all"],
        subresources: &[status("Service")],
    },
    ResourceKind {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        verbs: RW,
        categories: &[],
        subresources: &[],
    },
    ResourceKind {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        verbs: RW,
        categories: &["all"],
        subresources: &[status("Deployment"), SCALE],
    },
    ResourceKind {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        verbs: RW,
        categories: &["all"],
        subresources: &[status("ReplicaSet"), SCALE],
    },
    ResourceKind {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        verbs: RW,
        categories: &[],
        subresources: &[],
    },
    ResourceKind {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        verbs: RW,
        categories: &[],
        subresources: &[status("PodDisruptionBudget")],
    },
];

impl ResourceKind {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as Status messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// A subresource by name.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Finds a resource by group, version and plural.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Finds a resource by kind and apiVersion (`apps/v1`).
    pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceKind> {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.api_version() == api_version)
    }

    /// The groups served, in order, with their one version.
    pub fn groups() -> Vec<(&'static str, &'static str)> {
        let mut groups: Vec<(&str, &str)> = Vec::new();
        for r in RESOURCES {
            if !r.group.is_empty() && !groups.iter().any(|(g, _)| *g == r.group) {
                groups.push((r.group, r.version));
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let d = ResourceKind::find("apps", "v1", "deployments").unwrap();
        assert_eq!(d.api_version(), "apps/v1");
        assert_eq!(d.qualified(), "deployments.apps");
        assert_eq!(d.list_kind(), "DeploymentList");
        let p = ResourceKind::by_kind("v1", "Pod").unwrap();
        assert_eq!(p.qualified(), "pods");
        assert!(p.subresource("eviction").is_some());
        assert_eq!(
            ResourceKind::groups(),
            vec![("apps", "v1"), ("discovery.k8s.io", "v1"), ("policy", "v1")]
        );
    }
}
