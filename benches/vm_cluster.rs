//! Cluster benchmark (not a test): N claims with their pods created at
//! once against the cluster harness (real control plane and sidecars on the
//! host, two ferrolvm nodes in the VM); time from each claim's creation to
//! Bound (median, p99, total), the same for deletion until its
//! LogicalVolume is gone, and the node plugins' memory. Run with
//! `cargo run -p vm-tests -- cluster-bench [N]`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::stats;
use ferrolvm::k8s::crd::LogicalVolume;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

fn vmsh(cmd: &str) -> String {
    let vmsh = std::env::var_os("FERROLVM_VMSH").expect("FERROLVM_VMSH: run under vm-tests");
    let out = std::process::Command::new(vmsh).arg(cmd).output().unwrap();
    assert!(out.status.success(), "vmsh {cmd}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// (VmRSS, VmHWM) in MiB of node N's plugin.
fn memory(n: u32) -> (f64, f64) {
    let s = vmsh(&format!(
        "cat /proc/$(cat /run/ferrolvm/node{n}.pid)/status"
    ));
    let kib = |key: &str| -> f64 {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

fn claim(name: &str) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": name },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "ferrolvm-thick",
                  "resources": { "requests": { "storage": "64Mi" } } }
    }))
    .unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
        "spec": { "containers": [{ "name": "c", "image": "busybox:latest", "imagePullPolicy": "Never",
                    "volumeMounts": [{ "name": "v", "mountPath": "/data" }] }],
                  "volumes": [{ "name": "v", "persistentVolumeClaim": { "claimName": name } }] }
    }))
    .unwrap()
}

fn report(what: &str, v: Vec<Duration>, total: Duration) {
    let n = v.len();
    let (median, p99) = stats(v);
    println!(
        "| {what} | {n} | {:.2} | {:.2} | {:.2} |",
        median / 1e3,
        p99 / 1e3,
        total.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let c = kube::Client::try_default().await.expect("KUBECONFIG");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    let idle = [memory(1), memory(2)];
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();

    let start = Instant::now();
    let created: Vec<Instant> = futures::future::join_all(names.iter().map(|name| {
        let (pvcs, pods) = (pvcs.clone(), pods.clone());
        async move {
            pvcs.create(&PostParams::default(), &claim(name))
                .await
                .unwrap();
            let at = Instant::now();
            pods.create(&PostParams::default(), &pod(name))
                .await
                .unwrap();
            at
        }
    }))
    .await;
    let created: HashMap<&str, Instant> = names.iter().map(String::as_str).zip(created).collect();
    let mut bound: HashMap<String, Duration> = HashMap::new();
    let mut volumes: HashMap<String, String> = HashMap::new();
    while bound.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "not all bound in 15 min"
        );
        for p in pvcs.list(&ListParams::default()).await.unwrap().items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let (Some(at), false) = (created.get(name.as_str()), bound.contains_key(&name)) else {
                continue;
            };
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
                bound.insert(name.clone(), at.elapsed());
                volumes.insert(name, p.spec.and_then(|s| s.volume_name).unwrap_or_default());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_bound = start.elapsed();
    let loaded = [memory(1), memory(2)];
    let per_node: Vec<usize> = ["vg1", "vg2"]
        .iter()
        .map(|vg| {
            vmsh(&format!("lvm lvs --noheadings -o lv_name {vg}"))
                .split_whitespace()
                .filter(|l| l.starts_with("pvc-"))
                .count()
        })
        .collect();

    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let start = Instant::now();
    let deleted: Vec<Instant> = futures::future::join_all(names.iter().map(|name| {
        let (pvcs, pods, now) = (pvcs.clone(), pods.clone(), now.clone());
        async move {
            pods.delete(name, &now).await.unwrap();
            let at = Instant::now();
            pvcs.delete(name, &now).await.unwrap();
            at
        }
    }))
    .await;
    let deleted: HashMap<&str, Instant> = names.iter().map(String::as_str).zip(deleted).collect();
    let mut gone: HashMap<&str, Duration> = HashMap::new();
    while gone.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "not all gone in 15 min"
        );
        let left: Vec<String> = lvs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect();
        for name in &names {
            let v = &volumes[name];
            if !gone.contains_key(name.as_str()) && !left.contains(v) {
                gone.insert(name, deleted[name.as_str()].elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_gone = start.elapsed();

    println!("\n## {n} claims with pods at once (64 MiB thick each), two nodes in the VM (TCG)");
    println!(
        "claims per node after binding: node1 {}, node2 {}",
        per_node[0], per_node[1]
    );
    println!("| phase | claims | median s | p99 s | total s |");
    println!("|---|---|---|---|---|");
    report("created → Bound", bound.into_values().collect(), all_bound);
    report(
        "deleted → LogicalVolume gone",
        gone.into_values().collect(),
        all_gone,
    );
    println!("\n| node plugin | RSS idle MiB | RSS after binding MiB | peak (VmHWM) MiB |");
    println!("|---|---|---|---|");
    for (i, (idle, loaded)) in idle.iter().zip(loaded.iter()).enumerate() {
        println!(
            "| node{} | {:.1} | {:.1} | {:.1} |",
            i + 1,
            idle.0,
            loaded.0,
            loaded.1
        );
    }
}
