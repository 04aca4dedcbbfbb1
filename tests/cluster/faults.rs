//! Faults during provisioning: `ferrolvm controller` killed (and restarted,
//! as its Deployment would be) so that its Lease changes hands, both node
//! plugins killed mid-create and started again. Whatever was in flight,
//! every claim ends bound to exactly one LV on exactly its node, and
//! deleting the claims leaks nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use ferrolvm::k8s::crd::LogicalVolume;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::{bound, claim_and_pod, client, eventually, lvm_lvs, remove_all, vmsh, SYSTEM_NS};

/// Names of the claim-made LVs (CSI names `pvc-<uid>`) in `vg`.
fn claim_lvs(vg: &str) -> Vec<String> {
    lvm_lvs(vg)
        .into_iter()
        .filter(|l| l.starts_with("pvc-"))
        .collect()
}

fn kill_controller() {
    let pid_file = std::env::var_os("FERROLVM_CONTROLLER_PID").expect("FERROLVM_CONTROLLER_PID");
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on a pid the harness wrote; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
}

/// Kills node N's plugin at once (no grace) and starts it again.
fn crash_node(n: u32) {
    vmsh(&format!(
        "kill -9 $(cat /run/ferrolvm/node{n}.pid) && sleep 0.3 && ferrolvm-node-start {n}"
    ));
}

#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn killed_controller_and_nodes_leave_no_twin_and_no_leak() {
    let c = client().await;
    let before: Vec<String> = ["vg1", "vg2"].iter().flat_map(|v| claim_lvs(v)).collect();
    assert!(
        before.is_empty(),
        "claim LVs left by earlier tests: {before:?}"
    );
    let leases: Api<Lease> = Api::namespaced(c.clone(), SYSTEM_NS);
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity);
    let leader = eventually("the controller holds its Lease", 30, || async {
        holder(leases.get_opt("ferrolvm-controller").await.ok()??)
    })
    .await;
    let names: Vec<String> = (1..=8).map(|i| format!("fault-{i}")).collect();
    for n in &names {
        claim_and_pod(&c, n, "ferrolvm-thick", "256Mi").await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill_controller();
    crash_node(1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    crash_node(2);
    kill_controller();

    let next = eventually("the Lease changes hands", 60, || async {
        let h = holder(leases.get_opt("ferrolvm-controller").await.ok()??)?;
        (h != leader).then_some(h)
    })
    .await;
    eprintln!("leader {leader} -> {next}");

    let mut pvs = BTreeSet::new();
    for n in &names {
        pvs.insert(bound(&c, n, 240).await);
    }
    assert_eq!(pvs.len(), names.len(), "each claim its own PV");
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    let (on1, on2) = (claim_lvs("vg1"), claim_lvs("vg2"));
    let mut all: Vec<String> = on1.iter().chain(&on2).cloned().collect();
    all.sort();
    assert_eq!(
        all,
        pvs.iter().cloned().collect::<Vec<_>>(),
        "exactly one LV per claim, none extra (vg1 {on1:?}, vg2 {on2:?})"
    );
    for pv in &pvs {
        let lv = lvs.get(pv).await.unwrap();
        let vg = if lv.spec.node_name == "node1" {
            &on1
        } else {
            &on2
        };
        assert!(vg.contains(pv), "{pv}'s LV is not on {}", lv.spec.node_name);
    }
    let objects = lvs.list(&Default::default()).await.unwrap().items;
    assert_eq!(
        objects
            .iter()
            .filter(|l| l.spec.name.starts_with("pvc-"))
            .count(),
        pvs.len(),
        "one LogicalVolume per claim"
    );

    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    remove_all(&c, &refs).await;
    eventually("no claim LV is left", 60, || async {
        let left: Vec<String> = ["vg1", "vg2"].iter().flat_map(|v| claim_lvs(v)).collect();
        left.is_empty().then_some(())
    })
    .await;
}
