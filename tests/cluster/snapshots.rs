//! Snapshots and clones on the thin class through VolumeSnapshot objects:
//! csi-snapshotter and the snapshot-controller drive `ferrolvm controller`,
//! which asks the source's node for a thin snapshot.

use ferrolvm::k8s::crd::{AccessType, LogicalVolume};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::core::GroupVersionKind;

use crate::{bound, claim_and_pod, client, eventually, lvm_lvs, pod_on, remove_all, vmsh, NS};

fn vg_of(node: &str) -> &'static str {
    if node == "node1" {
        "vg1"
    } else {
        "vg2"
    }
}

/// A claim made from `kind` (VolumeSnapshot or PersistentVolumeClaim) `from`.
fn claim_from(name: &str, kind: &str, from: &str) -> PersistentVolumeClaim {
    let group = (kind == "VolumeSnapshot").then_some("snapshot.storage.k8s.io");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": name },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "ferrolvm-thin",
            "resources": { "requests": { "storage": "1Gi" } },
            "dataSource": { "apiGroup": group, "kind": kind, "name": from }
        }
    }))
    .unwrap()
}

/// A thin volume's VolumeSnapshot becomes ready and is a thin snapshot of
/// the source's LV on the source's node (lvm2 shows the origin); a claim
/// restored from it and a clone of the source claim are bound there as
/// volumes made from their sources; deleting the snapshot removes its LV.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn thin_snapshots_and_clones_through_volume_snapshots() {
    let c = client().await;
    claim_and_pod(&c, "snap-src", "ferrolvm-thin", "1Gi").await;
    let src_pv = bound(&c, "snap-src", 90).await;
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    let src = lvs.get(&src_pv).await.unwrap();
    let node = src.spec.node_name.clone();
    let src_id = src.status.unwrap().volume_id.unwrap();

    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    let snaps: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), NS, &ApiResource::from_gvk(&gvk));
    let snap: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": { "name": "snap-1" },
        "spec": { "volumeSnapshotClassName": "ferrolvm",
                  "source": { "persistentVolumeClaimName": "snap-src" } }
    }))
    .unwrap();
    snaps.create(&PostParams::default(), &snap).await.unwrap();
    eventually("the VolumeSnapshot is ready", 90, || async {
        let s = snaps.get("snap-1").await.ok()?;
        (s.data["status"]["readyToUse"] == serde_json::json!(true)).then_some(())
    })
    .await;
    let snap_lv = lvs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|l| l.spec.source.as_deref() == Some(src_id.as_str()))
        .expect("a LogicalVolume for the snapshot");
    assert_eq!(snap_lv.spec.access_type, Some(AccessType::ReadOnly));
    assert_eq!(snap_lv.spec.node_name, node);
    let vg = vg_of(&node);
    let origins = vmsh(&format!("lvm lvs --noheadings -o lv_name,origin {vg}"));
    assert!(
        origins
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(src_pv.as_str())),
        "no LV with origin {src_pv} in {vg}:\n{origins}"
    );

    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    for (name, kind, from) in [
        ("snap-restore", "VolumeSnapshot", "snap-1"),
        ("snap-clone", "PersistentVolumeClaim", "snap-src"),
    ] {
        pvcs.create(&PostParams::default(), &claim_from(name, kind, from))
            .await
            .unwrap();
        // A thin copy lives in its source's pool: the pod goes there.
        pods.create(&PostParams::default(), &pod_on(name, name, Some(&node)))
            .await
            .unwrap();
        let pv = bound(&c, name, 90).await;
        let made = lvs.get(&pv).await.unwrap();
        assert_eq!(made.spec.node_name, node, "{name}");
        assert_eq!(made.spec.access_type, Some(AccessType::ReadWrite), "{name}");
        assert!(made.spec.source.is_some(), "{name}");
        assert!(lvm_lvs(vg).contains(&pv), "{name}: {pv} not in {vg}");
    }

    remove_all(&c, &["snap-restore", "snap-clone"]).await;
    let snap_name = snap_lv.metadata.name.clone().unwrap();
    snaps
        .delete("snap-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the snapshot's LogicalVolume is removed", 90, || async {
        lvs.get_opt(&snap_name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    remove_all(&c, &["snap-src"]).await;
    assert!(!lvm_lvs(vg).contains(&src_pv));
}
