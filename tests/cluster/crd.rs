//! The LogicalVolume CRD on the real API server.

use ferrolvm::k8s::crd::{
    bytes_quantity, quantity_bytes, LogicalVolume, LogicalVolumeSpec, LogicalVolumeStatus,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::{client, install_crd};

fn lv(name: &str, node: &str, bytes: u64) -> LogicalVolume {
    LogicalVolume::new(
        name,
        LogicalVolumeSpec {
            name: format!("pvc-{name}"),
            node_name: node.into(),
            device_class: Some("thick".into()),
            size: bytes_quantity(bytes),
            source: None,
            access_type: None,
        },
    )
}

/// The CRD on a real API server (on nodes no ferrolvm serves, so that only
/// this test writes status): objects round-trip, each node can list
/// only its own by `spec.nodeName` (a selectable field, so the server
/// filters), status is a subresource the spec writer cannot touch,
/// nodeName cannot change, and the printer columns show what operators read.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn logical_volumes_on_the_real_api_server() {
    let c = client().await;
    install_crd(&c).await;
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    for (name, node) in [
        ("crd-a", "node-x"),
        ("crd-b", "node-y"),
        ("crd-c", "node-x"),
    ] {
        lvs.create(&PostParams::default(), &lv(name, node, 1 << 30))
            .await
            .unwrap();
    }
    let mine = lvs
        .list(&ListParams::default().fields("spec.nodeName=node-x"))
        .await
        .unwrap();
    let mut names: Vec<_> = mine
        .items
        .iter()
        .map(|l| l.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["crd-a", "crd-c"]);
    let got = lvs.get("crd-a").await.unwrap();
    assert_eq!(got.spec, lv("crd-a", "node-x", 1 << 30).spec);
    assert_eq!(quantity_bytes(&got.spec.size), Some(1 << 30));
    assert!(got.status.is_none());

    // Status goes through the subresource; a spec write does not set it.
    let status = LogicalVolumeStatus {
        volume_id: Some("uuid-1".into()),
        code: 0,
        message: None,
        current_size: Some(bytes_quantity(1 << 30)),
    };
    lvs.patch_status(
        "crd-a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .unwrap();
    let mut spec_write = lvs.get("crd-a").await.unwrap();
    spec_write.status = Some(LogicalVolumeStatus {
        volume_id: Some("forged".into()),
        ..Default::default()
    });
    lvs.replace("crd-a", &PostParams::default(), &spec_write)
        .await
        .unwrap();
    assert_eq!(
        lvs.get("crd-a").await.unwrap().status,
        Some(status),
        "a spec write changed the status"
    );

    // nodeName is immutable (the CEL rule in the CRD).
    let moved = lvs
        .patch(
            "crd-a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "nodeName": "node-y" } })),
        )
        .await;
    match moved {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("immutable"), "{e:?}");
        }
        other => panic!("nodeName changed: {other:?}"),
    }
    // A malformed object is refused by the server's schema.
    let bad = serde_json::json!({
        "apiVersion": "ferrolvm.io/v1", "kind": "LogicalVolume",
        "metadata": { "name": "crd-bad" },
        "spec": { "name": "pvc-bad", "nodeName": "node-x", "accessType": "sideways" }
    });
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        c.clone(),
        &kube::api::ApiResource::erase::<LogicalVolume>(&()),
    );
    let refused = raw
        .create(
            &PostParams::default(),
            &serde_json::from_value(bad).unwrap(),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422),
        "{refused:?}"
    );

    // What an operator sees.
    let kubectl = std::env::var_os("FERROLVM_KUBECTL").expect("FERROLVM_KUBECTL");
    let out = std::process::Command::new(kubectl)
        .args(["get", "flv", "crd-a"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "NODE", "CLASS", "SIZE", "CURRENT", "AGE"]);
    assert!(
        table.contains("node-x") && table.contains("1073741824"),
        "{table}"
    );

    for name in ["crd-a", "crd-b", "crd-c"] {
        lvs.delete(name, &DeleteParams::default()).await.unwrap();
    }
}
