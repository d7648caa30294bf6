//! Every imperative kubectl verb a new user types, with the real kubectl
//! (1.33: its `create` subcommands send Kubernetes protobuf) against the
//! embedded cluster running real `rolltest serve` pods, each effect checked;
//! and what the server says to encodings it does not speak.

use crate::{api::Harness, common};

/// What the verbs test checks on top of the API tests' harness.
impl Harness {
    /// One field of one object (`-o jsonpath`).
    async fn field(&self, object: &str, path: &str) -> String {
        self.ok(&["get", object, "-o", &format!("jsonpath={{{path}}}")])
            .await
    }

    async fn rolled_out(&self) {
        let out = self
            .ok(&["rollout", "status", "deployment/d1", "--timeout=90s"])
            .await;
        assert!(out.contains("successfully rolled out"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kubectl_verb_a_user_types() {
    let k = Harness::start().await;

    // create deployment / service / pdb: protobuf bodies.
    let out = k
        .ok(&["create", "deployment", "d1", "--image=rolltest-demo:dev"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/d1 created");
    assert_eq!(
        k.field("deployment/d1", ".spec.template.spec.containers[0].image")
            .await,
        "rolltest-demo:dev"
    );
    assert_eq!(k.field("deployment/d1", ".spec.replicas").await, "1");
    k.ok(&["create", "service", "clusterip", "d1", "--tcp=80:8080"])
        .await;
    assert_eq!(
        k.field(
            "service/d1",
            ".spec.ports[0].port}:{.spec.ports[0].targetPort"
        )
        .await,
        "80:8080"
    );
    assert!(!k.field("service/d1", ".spec.clusterIP").await.is_empty());
    k.ok(&[
        "create",
        "pdb",
        "d1",
        "--selector=app=d1",
        "--min-available=1",
    ])
    .await;
    assert_eq!(
        k.field(
            "pdb/d1",
            ".spec.minAvailable}/{.spec.selector.matchLabels.app"
        )
        .await,
        "1/d1"
    );
    k.ok(&["create", "namespace", "team-a"]).await;
    assert_eq!(k.field("namespace/team-a", ".status.phase").await, "Active");

    // expose: a Service selecting the deployment's pods.
    k.ok(&[
        "expose",
        "deployment",
        "d1",
        "--name=d1x",
        "--port=8081",
        "--target-port=8080",
    ])
    .await;
    assert_eq!(k.field("service/d1x", ".spec.selector.app").await, "d1");

    // run, then logs print the demo app's own lines.
    k.ok(&["run", "p1", "--image=rolltest-demo:dev"]).await;
    k.ok(&["wait", "--for=condition=Ready", "pod/p1", "--timeout=90s"])
        .await;
    let logs = k.ok(&["logs", "p1"]).await;
    assert!(
        logs.contains("p1 listening on") && logs.contains("p1 ready"),
        "{logs}"
    );

    // scale, set image, rollout history and undo.
    k.ok(&["scale", "deployment", "d1", "--replicas=2"]).await;
    assert_eq!(k.field("deployment/d1", ".spec.replicas").await, "2");
    k.rolled_out().await;
    k.ok(&[
        "set",
        "image",
        "deployment/d1",
        "rolltest-demo=rolltest-demo:v2",
    ])
    .await;
    k.rolled_out().await;
    assert_eq!(
        k.field("deployment/d1", ".spec.template.spec.containers[0].image")
            .await,
        "rolltest-demo:v2"
    );
    let history = k.ok(&["rollout", "history", "deployment/d1"]).await;
    let revisions = |h: &str| -> Vec<String> {
        h.lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    assert_eq!(revisions(&history), ["1", "2"], "{history}");
    k.ok(&["rollout", "undo", "deployment/d1"]).await;
    k.rolled_out().await;
    assert_eq!(
        k.field("deployment/d1", ".spec.template.spec.containers[0].image")
            .await,
        "rolltest-demo:dev"
    );
    // The first ReplicaSet is reused and becomes revision 3, as upstream.
    let history = k.ok(&["rollout", "history", "deployment/d1"]).await;
    assert_eq!(revisions(&history), ["2", "3"], "{history}");
    let sets = k.ok(&["get", "rs", "-l", "app=d1", "-o", "name"]).await;
    assert_eq!(sets.lines().count(), 2, "undo reuses a ReplicaSet: {sets}");

    // label, annotate.
    k.ok(&["label", "deployment", "d1", "team=a"]).await;
    k.ok(&["annotate", "deployment", "d1", "note=hello"]).await;
    assert_eq!(
        k.field(
            "deployment/d1",
            ".metadata.labels.team}/{.metadata.annotations.note"
        )
        .await,
        "a/hello"
    );

    // describe.
    let described = k.ok(&["describe", "deployment", "d1"]).await;
    assert!(
        described.contains("rolltest-demo:dev")
            && described.contains("NewReplicaSet:")
            && described.contains("ScalingReplicaSet"),
        "{described}"
    );
    let described = k.ok(&["describe", "pod", "p1"]).await;
    assert!(described.contains("Status:       Running"), "{described}");

    // cordon, uncordon.
    k.ok(&["cordon", "embedded-node-1"]).await;
    assert_eq!(
        k.field("node/embedded-node-1", ".spec.unschedulable").await,
        "true"
    );
    k.ok(&["uncordon", "embedded-node-1"]).await;
    assert_eq!(
        k.field("node/embedded-node-1", ".spec.unschedulable").await,
        ""
    );

    // delete a pod, then drain the node of one of the deployment's pods.
    k.ok(&["delete", "pod", "p1"]).await;
    assert!(!k.kubectl(&["get", "pod", "p1"]).await.status.success());
    let node = k
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=d1",
            "-o",
            "jsonpath={.items[0].spec.nodeName}",
        ])
        .await;
    let out = k
        .ok(&["drain", &node, "--ignore-daemonsets", "--timeout=90s"])
        .await;
    assert!(out.contains("evicted") && out.contains("drained"), "{out}");
    assert_eq!(
        k.field(&format!("node/{node}"), ".spec.unschedulable")
            .await,
        "true"
    );
    let left = k
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=d1",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "name",
        ])
        .await;
    assert!(left.trim().is_empty(), "pods left on {node}: {left}");
    k.rolled_out().await;

    // delete the rest.
    k.ok(&[
        "delete",
        "deployment/d1",
        "service/d1",
        "service/d1x",
        "pdb/d1",
    ])
    .await;
    for gone in ["deployment/d1", "service/d1", "pdb/d1"] {
        assert!(!k.kubectl(&["get", gone]).await.status.success(), "{gone}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_encodings_get_415_and_unservable_accepts_406() {
    let h = Harness::start().await;
    let client = common::kube_client(&h.cluster.kubeconfig(), None).await;
    let send = |content_type: &str, accept: &str, body: &[u8]| {
        http::Request::post("/api/v1/namespaces/default/services")
            .header("content-type", content_type)
            .header("accept", accept)
            .body(body.to_vec())
            .expect("request")
    };
    let service = br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":80}]}}"#;
    let yaml = b"apiVersion: v1\nkind: Service\nmetadata: {name: s}\n";
    for (ct, body) in [
        ("application/yaml", &yaml[..]),
        ("application/cbor", &[0xd9, 0xd9, 0xf7][..]),
        ("text/plain", &service[..]),
    ] {
        match client
            .request::<serde_json::Value>(send(ct, "application/json", body))
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 415, "{ct}: {status:?}");
                assert_eq!(status.reason, "UnsupportedMediaType", "{ct}");
                assert!(
                    status
                        .message
                        .contains("application/vnd.kubernetes.protobuf"),
                    "{}",
                    status.message
                );
            }
            other => panic!("{ct}: expected a 415 Status, got {other:?}"),
        }
    }
    // Protobuf with JSON as the fallback is answered in JSON; protobuf only is 406.
    let created = client
        .request::<serde_json::Value>(send(
            "application/json",
            "application/vnd.kubernetes.protobuf, application/json",
            service,
        ))
        .await
        .expect("created");
    assert_eq!(created["metadata"]["name"], "s");
    let get = |accept: &str| {
        http::Request::get("/api/v1/namespaces/default/services/s")
            .header("accept", accept)
            .body(Vec::new())
            .expect("request")
    };
    match client
        .request::<serde_json::Value>(get("application/vnd.kubernetes.protobuf"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (406, "NotAcceptable")
            );
        }
        other => panic!("expected a 406 Status, got {other:?}"),
    }
    for accept in [
        "*/*",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        "",
    ] {
        client
            .request::<serde_json::Value>(get(accept))
            .await
            .unwrap_or_else(|e| panic!("Accept {accept:?}: {e}"));
    }
    // A protobuf body client-go wrote (scripts/proto-schema) creates the object.
    let deployment =
        include_bytes!("../../crates/minicluster/src/api/proto/testdata/deployment.pb");
    let req = http::Request::post("/apis/apps/v1/namespaces/default/deployments")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(deployment.to_vec())
        .expect("request");
    let created = client
        .request::<serde_json::Value>(req)
        .await
        .expect("protobuf create");
    assert_eq!(created["spec"]["replicas"], 0);
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"],
        0
    );
    assert_eq!(
        created["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
}
