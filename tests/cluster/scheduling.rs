//! Capacity-aware scheduling, the talk's demo: kube-scheduler places pods
//! by the CSIStorageCapacity objects csi-provisioner makes from
//! GetCapacity, which ferrolvm answers from the room each node publishes.

use ferrolvm::k8s::crd::quantity_bytes;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::{claim_and_pod, client, eventually, remove_all, scheduled_on, vmsh, wipes_done, NS};

const GIB: u64 = 1 << 30;

/// What kube-scheduler reads for `class` on `node`: the largest volume
/// (maximumVolumeSize, else capacity) of its CSIStorageCapacity object.
async fn seen_by_scheduler(c: &Client, class: &str, node: &str) -> Option<u64> {
    let caps: Api<CSIStorageCapacity> = Api::namespaced(c.clone(), NS);
    caps.list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|cap| {
            cap.storage_class_name == class
                && cap
                    .node_topology
                    .as_ref()
                    .and_then(|t| t.match_labels.as_ref())
                    .and_then(|l| l.get("topology.ferrolvm.io/node"))
                    .is_some_and(|n| n == node)
        })
        .and_then(|cap| cap.maximum_volume_size.or(cap.capacity))
        .and_then(|q| quantity_bytes(&q))
}

/// node2's VG exhausted by lvm2 in the VM: a claim that fits only node1
/// lands there; a claim larger than any node leaves its pod Pending with
/// the scheduler's capacity reason; five claims of 1 GiB all land where the
/// space is.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn pods_go_where_the_space_is_by_csi_storage_capacity() {
    let c = client().await;
    wipes_done("vg2").await;
    vmsh("lvm lvcreate -q -l 100%FREE -n filler vg2");
    eventually("the scheduler sees node2 full", 30, || async {
        (seen_by_scheduler(&c, "ferrolvm-thick", "node2").await? < GIB).then_some(())
    })
    .await;
    eventually("the scheduler sees room on node1", 30, || async {
        (seen_by_scheduler(&c, "ferrolvm-thick", "node1").await? >= 6 * GIB).then_some(())
    })
    .await;

    claim_and_pod(&c, "sched-fit", "ferrolvm-thick", "1Gi").await;
    crate::bound(&c, "sched-fit", 120).await;
    assert_eq!(scheduled_on(&c, "sched-fit", 60).await, "node1");

    claim_and_pod(&c, "sched-huge", "ferrolvm-thick", "100Gi").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let why = eventually("the huge pod is unschedulable", 60, || async {
        let p = pods.get("sched-huge").await.ok()?;
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        cond.message
    })
    .await;
    assert!(
        why.contains("did not have enough free storage"),
        "the scheduler's reason: {why}"
    );
    assert!(pods
        .get("sched-huge")
        .await
        .unwrap()
        .spec
        .unwrap()
        .node_name
        .is_none());

    let five: Vec<String> = (1..=5).map(|i| format!("sched-five-{i}")).collect();
    for n in &five {
        claim_and_pod(&c, n, "ferrolvm-thick", "1Gi").await;
    }
    for n in &five {
        crate::bound(&c, n, 120).await;
        assert_eq!(scheduled_on(&c, n, 60).await, "node1", "{n}");
    }

    let mut all = vec!["sched-fit", "sched-huge"];
    all.extend(five.iter().map(String::as_str));
    remove_all(&c, &all).await;
    vmsh("lvm lvremove -q -f vg2/filler");
}
