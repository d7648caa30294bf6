use serde_json::json;

use super::*;
use crate::resources::RESOURCES;

/// A PodDisruptionBudget encoded by hand, the way client-go would write it
/// if it skipped zero fields (it does not: see the golden tests), each byte
/// checked against protobuf.dev's encoding guide and policy/v1's
/// generated.proto.
#[test]
fn hand_encoded_pdb() {
    let body: Vec<u8> = [
        &b"k8s\0"[..],
        // runtime.Unknown 1 typeMeta (32 bytes): 1 apiVersion (9), 2 kind (19).
        &[0x0a, 0x20, 0x0a, 0x09],
        b"policy/v1",
        &[0x12, 0x13],
        b"PodDisruptionBudget",
        // 2 raw (29 bytes): the PodDisruptionBudget.
        &[0x12, 0x1d],
        // 1 metadata (7): ObjectMeta 1 name "web".
        &[0x0a, 0x05, 0x0a, 0x03],
        b"web",
        // 2 spec (20): 1 minAvailable (4) = IntOrString {1 type 0, 2 intVal 2};
        &[0x12, 0x14, 0x0a, 0x04, 0x08, 0x00, 0x10, 0x02],
        // 2 selector (12): 1 matchLabels entry (10) {1 "app", 2 "web"}.
        &[0x12, 0x0c, 0x0a, 0x0a, 0x0a, 0x03],
        b"app",
        &[0x12, 0x03],
        b"web",
    ]
    .concat();
    assert_eq!(
        decode(&body).expect("decodes"),
        json!({
            "kind": "PodDisruptionBudget",
            "apiVersion": "policy/v1",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            // A value struct absent from the wire is Go's zero struct: its
            // fields without omitempty are still written.
            "status": {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0},
        })
    );
}

/// Pairs written by `scripts/proto-schema` with the real Go libraries: the
/// body client-go sends for an object, and encoding/json of the same object.
/// They cover every special type (Time, MicroTime, IntOrString as number and
/// string, Quantity, FieldsV1), pointers set to zero (`replicas: 0`,
/// `runAsUser: 0`, `ready: false`), zero values omitempty drops (`env[0].value`),
/// a value struct without omitempty (`status: {}`, `lastTimestamp: null`) and
/// an inlined struct (`VolumeSource`, `ProbeHandler`).
#[test]
fn golden_pairs_from_client_go() {
    let pairs = [
        (
            "deployment",
            &include_bytes!("testdata/deployment.pb")[..],
            include_str!("testdata/deployment.json"),
        ),
        (
            "endpointslice",
            include_bytes!("testdata/endpointslice.pb"),
            include_str!("testdata/endpointslice.json"),
        ),
        (
            "event",
            include_bytes!("testdata/event.pb"),
            include_str!("testdata/event.json"),
        ),
        (
            "eviction",
            include_bytes!("testdata/eviction.pb"),
            include_str!("testdata/eviction.json"),
        ),
        (
            "pdb",
            include_bytes!("testdata/pdb.pb"),
            include_str!("testdata/pdb.json"),
        ),
    ];
    for (name, pb, json) in pairs {
        let expected: Value = serde_json::from_str(json).expect("golden JSON");
        assert_eq!(decode(pb).expect(name), expected, "{name}");
    }
}

#[test]
fn the_schema_covers_every_kind_the_server_writes() {
    let schema = Schema::get().expect("schema parses");
    for r in RESOURCES {
        assert!(
            schema.kind(&r.api_version(), r.kind).is_some(),
            "{} {}",
            r.api_version(),
            r.kind
        );
        for sub in r.subresources {
            let version = match (sub.group, sub.version) {
                (Some(g), Some(v)) => format!("{g}/{v}"),
                _ => r.api_version(),
            };
            assert!(
                schema.kind(&version, sub.kind).is_some(),
                "{version} {}",
                sub.kind
            );
        }
    }
    assert!(schema.kind("apps/v1", "DeleteOptions").is_some());
    assert_eq!(schema.kinds().count(), 12);
}

#[test]
fn bad_bodies_are_errors() {
    assert!(matches!(
        decode(b"{\"kind\":\"Pod\"}"),
        Err(ProtoError::Magic)
    ));
    // The PDB cut short anywhere fails cleanly, except between two fields
    // of the envelope: after typeMeta (byte 38: no raw, an empty object),
    // after raw (97) and after the empty contentEncoding (99).
    let pdb = include_bytes!("testdata/pdb.pb");
    for end in (5..pdb.len()).filter(|end| ![38, 97, 99].contains(end)) {
        assert!(decode(&pdb[..end]).is_err(), "cut at {end} decoded");
    }
    let unknown = [
        &b"k8s\0"[..],
        &[0x0a, 0x0b, 0x0a, 0x02],
        b"v1",
        &[0x12, 0x05],
        b"Thing",
    ]
    .concat();
    assert!(matches!(
        decode(&unknown),
        Err(ProtoError::UnknownKind { kind, .. }) if kind == "Thing"
    ));
    let gzip = [
        &b"k8s\0"[..],
        &[0x0a, 0x09, 0x0a, 0x02],
        b"v1",
        &[0x12, 0x03],
        b"Pod",
        &[0x1a, 0x04],
        b"gzip",
    ]
    .concat();
    assert!(matches!(decode(&gzip), Err(ProtoError::ContentEncoding(e)) if e == "gzip"));
}

#[test]
fn times_are_rfc3339_in_utc() {
    assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_767_225_600, None), "2026-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_825_600, None), "2000-02-29T12:00:00Z");
    assert_eq!(rfc3339(-1, Some(5_000)), "1969-12-31T23:59:59.000005Z");
}
