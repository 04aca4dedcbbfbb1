//! A Node deleted: the controller's Node finalizer (on the leader) deletes
//! the claims bound to its volumes and its LogicalVolumes before the Node
//! goes; a node plugin still running removes the LVs itself.

use ferrolvm::k8s::crd::LogicalVolume;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::{bound, client, eventually, lvm_lvs, pod_on, pvc, NS};

/// Registers node2 again as the harness did (the stand-in for kubelet).
async fn register_node2(nodes: &Api<Node>) {
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": "node2", "labels": {
            "kubernetes.io/hostname": "node2", "topology.ferrolvm.io/node": "node2" } },
        "spec": { "taints": [] }
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = serde_json::json!({ "status": {
        "capacity": { "cpu": "8", "memory": "16Gi", "pods": "250" },
        "allocatable": { "cpu": "8", "memory": "16Gi", "pods": "250" },
        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
                         "message": "stand-in for kubelet (tests)" }] } });
    nodes
        .patch_status("node2", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    // The API server taints a new Node not-ready; lift it as the lifecycle controller would.
    nodes
        .patch(
            "node2",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "taints": null } })),
        )
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn a_deleted_node_takes_its_claims_and_volumes_with_it() {
    let c = client().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    pvcs.create(
        &PostParams::default(),
        &pvc("nodedel-1", "ferrolvm-thick", "256Mi"),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod_on("nodedel-1", "nodedel-1", Some("node2")),
    )
    .await
    .unwrap();
    let pv = bound(&c, "nodedel-1", 120).await;
    assert!(lvm_lvs("vg2").contains(&pv));
    let nodes: Api<Node> = Api::all(c.clone());
    eventually("the controller puts its finalizer on node2", 30, || async {
        let n = nodes.get("node2").await.ok()?;
        n.metadata
            .finalizers?
            .iter()
            .any(|f| f == "ferrolvm.io/node")
            .then_some(())
    })
    .await;

    nodes
        .delete("node2", &DeleteParams::default())
        .await
        .unwrap();
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    eventually("node2's LogicalVolume is gone", 60, || async {
        lvs.get_opt(&pv).await.unwrap().is_none().then_some(())
    })
    .await;
    eventually("the claim is being deleted", 30, || async {
        match pvcs.get_opt("nodedel-1").await.unwrap() {
            None => Some(()),
            Some(p) => p.metadata.deletion_timestamp.map(|_| ()),
        }
    })
    .await;
    eventually("node2 is gone", 30, || async {
        nodes
            .get_opt("node2")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        !lvm_lvs("vg2").contains(&pv),
        "the live plugin removed the LV"
    );

    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let _ = pods.delete("nodedel-1", &now).await;
    register_node2(&nodes).await;
    eventually("node2 publishes capacity again", 30, || async {
        let n = nodes.get("node2").await.ok()?;
        n.metadata
            .annotations?
            .contains_key("capacity.ferrolvm.io/thick")
            .then_some(())
    })
    .await;
    eventually("the claim is gone", 60, || async {
        pvcs.get_opt("nodedel-1")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
