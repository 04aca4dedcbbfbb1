//! Dynamic provisioning through the real sidecars: a pod's claim is bound
//! on the node the scheduler chose, grows on request, and is gone with its
//! LV when deleted; and each node's published capacity follows lvm2.

use std::time::{Duration, Instant};

use ferrolvm::k8s::crd::{quantity_bytes, LogicalVolume};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};

use crate::{
    bound, claim_and_pod, client, eventually, lvm_lv_bytes, lvm_lvs, remove_all, scheduled_on,
    vmsh, NS,
};

const GIB: u64 = 1 << 30;

fn vg_of(node: &str) -> &'static str {
    match node {
        "node1" => "vg1",
        "node2" => "vg2",
        other => panic!("no VG for node {other}"),
    }
}

/// The node a PV's required node affinity names.
fn affinity_node(pv: &PersistentVolume) -> String {
    let terms = &pv
        .spec
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required
        .as_ref()
        .unwrap()
        .node_selector_terms;
    let e = &terms[0].match_expressions.as_ref().unwrap()[0];
    assert_eq!(e.key, "topology.ferrolvm.io/node");
    e.values.as_ref().unwrap()[0].clone()
}

/// A pod with a claim is scheduled; the claim is bound to a PV whose node
/// affinity is the pod's node; the LogicalVolume is on that node and lvm2
/// there has the LV (and the other node has not). The claim grown from 1 to
/// 2 GiB grows the LV, the LogicalVolume's status and the PV. The claim
/// deleted takes the PV, the LogicalVolume and the LV with it.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn a_claim_is_provisioned_on_its_pods_node_grown_and_removed() {
    let c = client().await;
    claim_and_pod(&c, "prov-1", "ferrolvm-thick", "1Gi").await;
    // The scheduler binds the pod once its claim is bound on the chosen node.
    let pv_name = bound(&c, "prov-1", 120).await;
    let node = scheduled_on(&c, "prov-1", 60).await;
    let pvs: Api<PersistentVolume> = Api::all(c.clone());
    let pv = pvs.get(&pv_name).await.unwrap();
    assert_eq!(affinity_node(&pv), node);
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    let lv = lvs.get(&pv_name).await.unwrap();
    assert_eq!(lv.spec.node_name, node);
    let vg = vg_of(&node);
    let other = vg_of(if node == "node1" { "node2" } else { "node1" });
    assert!(lvm_lvs(vg).contains(&pv_name), "{pv_name} not in {vg}");
    assert!(
        !lvm_lvs(other).contains(&pv_name),
        "{pv_name} also in {other}"
    );
    assert_eq!(lvm_lv_bytes(vg, &pv_name), GIB);
    assert_eq!(
        pv.spec
            .as_ref()
            .unwrap()
            .csi
            .as_ref()
            .unwrap()
            .volume_handle,
        lv.status.as_ref().unwrap().volume_id.clone().unwrap()
    );

    // Online expansion: the claim asks for 2 GiB.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    pvcs.patch(
        "prov-1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "spec": { "resources": { "requests": { "storage": "2Gi" } } }
        })),
    )
    .await
    .unwrap();
    eventually("the PV grows to 2 GiB", 90, || async {
        let pv = pvs.get(&pv_name).await.ok()?;
        let cap = pv.spec?.capacity?.get("storage")?.clone();
        (quantity_bytes(&cap)? == 2 * GIB).then_some(())
    })
    .await;
    assert_eq!(lvm_lv_bytes(vg, &pv_name), 2 * GIB);
    let status = lvs.get(&pv_name).await.unwrap().status.unwrap();
    assert_eq!(
        quantity_bytes(status.current_size.as_ref().unwrap()),
        Some(2 * GIB)
    );

    remove_all(&c, &["prov-1"]).await;
    eventually("the PV is deleted", 60, || async {
        pvs.get_opt(&pv_name).await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(!lvm_lvs(vg).contains(&pv_name), "the LV outlived its claim");
}

fn published(node: &Node, class: &str) -> Option<u64> {
    node.metadata
        .annotations
        .as_ref()?
        .get(&format!("capacity.ferrolvm.io/{class}"))?
        .parse()
        .ok()
}

/// An LV made by lvm2 on node1, behind ferrolvm's back, moves node1's
/// published capacity within 2 s (the watcher polls the metadata headers);
/// removing it moves it back.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn capacity_follows_lvm2_within_two_seconds() {
    let c = client().await;
    let nodes: Api<Node> = Api::all(c.clone());
    crate::wipes_done("vg1").await;
    let free = crate::lvm_vg_free("vg1");
    let before = eventually("node1 publishes lvm2's free space", 30, || async {
        (published(&nodes.get("node1").await.ok()?, "thick")? == free).then_some(free)
    })
    .await;
    for (cmd, expect) in [
        (
            "lvm lvcreate -q -L 512m -n outofband vg1",
            before - 512 * (1 << 20),
        ),
        ("lvm lvremove -q -f vg1/outofband", before),
    ] {
        vmsh(cmd);
        let start = Instant::now();
        eventually("node1's capacity annotation moves", 10, || async {
            (published(&nodes.get("node1").await.ok()?, "thick")? == expect).then_some(())
        })
        .await;
        let took = start.elapsed();
        eprintln!("capacity moved {took:?} after `{cmd}`");
        assert!(took < Duration::from_secs(2), "{cmd}: {took:?}");
    }
}
