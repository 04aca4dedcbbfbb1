//! A Node deleted: the controller's Node finalizer (on the leader) deletes
//! the claims bound to its volumes and its LogicalVolumes before the Node
//! goes; a node plugin still running removes the LVs itself. As operators
//! do it: the node is drained first (its pod deleted, kubelet unmounts the
//! volume), then the Node deleted.

use ferrolvm::k8s::crd::LogicalVolume;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, PostParams};

use crate::{bound, client, eventually, lvm_lvs, pod_on, pvc, vmsh, NS};

/// Brings node2's kubelet back: a kubelet registers its Node when it
/// starts (it does not re-create one deleted under it), and re-registers
/// ferrolvm from its plugin socket, which makes the CSINode again.
fn restart_kubelet_node2() {
    vmsh("kill $(cat /run/ferrolvm/kubelet-node2.pid); while kill -0 $(cat /run/ferrolvm/kubelet-node2.pid) 2>/dev/null; do sleep 0.2; done; kubelet-start 2");
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

    // Drained: the pod runs (kubelet published the volume) and is deleted;
    // kubelet unpublishes it.
    crate::running(&c, "nodedel-1", 120).await;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("nodedel-1", &now).await.unwrap();
    crate::unmounted("vg2", &pv, 60).await;
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

    restart_kubelet_node2();
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
