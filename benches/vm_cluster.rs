//! Cluster benchmark (not a test): N claims with their pods created at
//! once against the cluster harness (real control plane and sidecars on the
//! host, two nodes in the VM); time from each claim's creation to Bound
//! (median, p99, total), the same for deletion until its LogicalVolume is
//! gone, the node plugins' and the controller's memory, and how long the
//! capacity kube-scheduler sees takes to follow an out-of-band change (an
//! LV made by lvm2 behind the driver's back).
//!
//! `vm_cluster N DRIVER...` races each driver in turn: `ferrolvm`, and
//! `topolvm` (TopoLVM v0.41.0's controller and nodes, which `bench-peer`
//! starts beside ferrolvm's). With both it ends with
//! `RATIO cluster-bound-100`, TopoLVM's time until all N are Bound over
//! ferrolvm's. Run with `cargo run -p vm-tests -- cluster-bench [N]` or
//! `bench-peer`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::stats;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;

/// One side of the race, as the harness runs it.
struct Driver {
    name: &'static str,
    class: &'static str,
    /// The LogicalVolume CRD's group.
    group: &'static str,
    /// node1's and node2's VG.
    vgs: [&'static str; 2],
    /// The node plugins' pid files in the VM.
    node_pids: [&'static str; 2],
    /// The controller's pid file in the harness's run directory.
    controller_pid: &'static str,
}

const FERROLVM: Driver = Driver {
    name: "ferrolvm",
    class: "ferrolvm-thick",
    group: "ferrolvm.io",
    vgs: ["vg1", "vg2"],
    node_pids: ["/run/ferrolvm/node1.pid", "/run/ferrolvm/node2.pid"],
    controller_pid: "ferrolvm-controller.pid",
};

const TOPOLVM: Driver = Driver {
    name: "topolvm",
    class: "topolvm-thick",
    group: "topolvm.io",
    vgs: ["tvg1", "tvg2"],
    node_pids: ["/run/topolvm/node1.pid", "/run/topolvm/node2.pid"],
    controller_pid: "topolvm-controller.pid",
};

/// How long all claims may take to be Bound, and to be gone, unless
/// `FERROLVM_BENCH_PHASE_MIN` says otherwise (TopoLVM's 100 claims were 69
/// Bound after 26 min in one run: csi-provisioner's 30 s timeouts, retried
/// with back-off). A phase that runs out is reported with what it reached,
/// and a ratio over it is a lower bound, said so.
fn phase_limit() -> Duration {
    let min = std::env::var("FERROLVM_BENCH_PHASE_MIN")
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(90);
    Duration::from_secs(min * 60)
}

/// How long the capacity may take to follow an out-of-band change.
const CAPACITY_WAIT: Duration = Duration::from_secs(120);

fn vmsh(cmd: &str) -> String {
    let vmsh = std::env::var_os("FERROLVM_VMSH").expect("FERROLVM_VMSH: run under vm-tests");
    let out = std::process::Command::new(vmsh).arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "vmsh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// (VmRSS, VmHWM) in MiB from a /proc/PID/status text.
fn rss(status: &str) -> (f64, f64) {
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .expect("a VmRSS/VmHWM line")
            / 1024.0
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// A log line without its colours, timestamp and volume names, so that
/// one kind of warning counts as one line.
fn warning_kind(line: &str) -> String {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI colour: ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let words: Vec<String> = plain
        .split_whitespace()
        .skip(1)
        .map(|w| {
            let named =
                w.contains("pvc-") || w.chars().filter(|c| c.is_ascii_hexdigit()).count() >= 16;
            if named {
                "…".into()
            } else {
                w.to_string()
            }
        })
        .collect();
    words.join(" ").chars().take(160).collect()
}

/// The kinds of warning and error lines in each node plugin's log (the
/// log beside its pid file), most frequent first: what a slow phase was
/// waiting on, kept in the bench's output since the VM's files are not.
fn node_warnings(d: &Driver) {
    for pid in d.node_pids {
        let log = pid.replace(".pid", ".log");
        let text = vmsh(&format!("cat {log}"));
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for line in text.lines().filter(|l| {
            let u = l.to_ascii_uppercase();
            u.contains("WARN") || u.contains("ERROR")
        }) {
            *kinds.entry(warning_kind(line)).or_default() += 1;
        }
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let total: usize = kinds.iter().map(|k| k.1).sum();
        println!("# {} {log}: {total} warning or error lines", d.name);
        for (kind, n) in kinds.iter().take(6) {
            println!("#   {n}× {kind}");
        }
    }
}

/// [node1, node2, controller] (VmRSS, VmHWM) in MiB.
fn memory(d: &Driver) -> [(f64, f64); 3] {
    let node = |pid: &str| rss(&vmsh(&format!("cat /proc/$(cat {pid})/status")));
    let run_dir = std::env::var("FERROLVM_RUN_DIR").expect("FERROLVM_RUN_DIR");
    let pid = std::fs::read_to_string(format!("{run_dir}/{}", d.controller_pid)).unwrap();
    let controller = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    [node(d.node_pids[0]), node(d.node_pids[1]), rss(&controller)]
}

fn claim(name: &str, class: &str) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": name },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": class,
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

/// One phase's figures: (median s, p99 s, total s).
type Phase = (f64, f64, f64);

fn phase(v: Vec<Duration>, total: Duration) -> Phase {
    let (median, p99) = stats(v);
    (median / 1e3, p99 / 1e3, total.as_secs_f64())
}

/// What one driver's run measured.
struct Run {
    per_node: [usize; 2],
    /// Claims Bound, and of those volumes gone, within the phase limit.
    bound_of: usize,
    gone_of: usize,
    bound: Phase,
    gone: Phase,
    /// Seconds from lvm2's lvcreate of a 512 MiB LV on node1 (then its
    /// lvremove) until the published capacity is 512 MiB less (more);
    /// None: not within CAPACITY_WAIT.
    capacity: [Option<f64>; 2],
    idle: [(f64, f64); 3],
    loaded: [(f64, f64); 3],
}

/// The LVs a driver made in `vg` (everything but the thin pool).
fn volumes_in(vg: &str) -> usize {
    vmsh(&format!("lvm lvs --noheadings -o lv_name {vg}"))
        .split_whitespace()
        .filter(|l| *l != "pool")
        .count()
}

/// Bytes in a Kubernetes quantity as csi-provisioner writes capacities
/// (an integer with a binary or decimal suffix).
fn bytes(q: &str) -> u64 {
    let digits = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(digits);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    let scale: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => panic!("quantity {q}"),
    };
    n * scale
}

/// The capacity csi-provisioner publishes for `class` on node1, in bytes.
async fn node1_capacity(caps: &Api<CSIStorageCapacity>, class: &str) -> u64 {
    let q = caps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|c| {
            c.storage_class_name == class
                && c.node_topology
                    .as_ref()
                    .and_then(|t| t.match_labels.as_ref())
                    .is_some_and(|l| l.values().any(|v| v == "node1"))
        })
        .and_then(|c| c.capacity.map(|q| q.0))
        .unwrap_or_else(|| panic!("no CSIStorageCapacity for {class} on node1"));
    bytes(&q)
}

/// The size of the out-of-band LV.
const OOB_MIB: u64 = 512;

/// Waits until node1's capacity for `class` has not moved for 10 s (the
/// race's last frees and wipes published), then runs `change` in the VM
/// and times until the capacity is `before + delta(before)`.
async fn capacity_follows(
    caps: &Api<CSIStorageCapacity>,
    class: &str,
    change: &str,
    expect: impl Fn(u64) -> u64,
) -> Option<f64> {
    let mut before = node1_capacity(caps, class).await;
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = node1_capacity(caps, class).await;
        if now != before {
            (before, still) = (now, Instant::now());
        }
    }
    let want = expect(before);
    let start = Instant::now();
    vmsh(change);
    while start.elapsed() < CAPACITY_WAIT {
        if node1_capacity(caps, class).await == want {
            return Some(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn race(c: &kube::Client, d: &Driver, n: usize) -> Run {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let gvk = GroupVersionKind::gvk(d.group, "v1", "LogicalVolume");
    let lvs: Api<DynamicObject> = Api::all_with(c.clone(), &ApiResource::from_gvk(&gvk));
    let caps: Api<CSIStorageCapacity> = Api::all(c.clone());
    let idle = memory(d);
    let names: Vec<String> = (0..n).map(|i| format!("{}-{i}", d.name)).collect();

    let start = Instant::now();
    let created: Vec<Instant> = futures::future::join_all(names.iter().map(|name| {
        let (pvcs, pods) = (pvcs.clone(), pods.clone());
        async move {
            pvcs.create(&PostParams::default(), &claim(name, d.class))
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
    let limit = phase_limit();
    while bound.len() < n {
        if start.elapsed() >= limit {
            eprintln!(
                "vm_cluster: {}: only {} of {n} Bound at the phase limit ({limit:?})",
                d.name,
                bound.len()
            );
            break;
        }
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
    eprintln!(
        "vm_cluster: {}: {} of {n} Bound after {:.1} s",
        d.name,
        bound.len(),
        all_bound.as_secs_f64()
    );
    let loaded = memory(d);
    let per_node = [volumes_in(d.vgs[0]), volumes_in(d.vgs[1])];
    assert!(
        per_node[0] + per_node[1] >= bound.len(),
        "{}: every bound claim has its LV",
        d.name
    );

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
    while gone.len() < volumes.len() {
        if start.elapsed() >= limit {
            eprintln!(
                "vm_cluster: {}: only {} of {} gone at the phase limit ({limit:?})",
                d.name,
                gone.len(),
                volumes.len()
            );
            break;
        }
        let left: Vec<String> = lvs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect();
        for name in names.iter().filter(|n| volumes.contains_key(*n)) {
            let v = &volumes[name];
            if !gone.contains_key(name.as_str()) && !left.contains(v) {
                gone.insert(name, deleted[name.as_str()].elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_gone = start.elapsed();
    eprintln!(
        "vm_cluster: {}: {} of {} gone after {:.1} s",
        d.name,
        gone.len(),
        volumes.len(),
        all_gone.as_secs_f64()
    );
    node_warnings(d);
    // Pods may still be terminating: their names come back in the next run.
    while !pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The change of a thick class's capacity is the LV's size (spare 0).
    let vg = d.vgs[0];
    let oob = OOB_MIB << 20;
    let made = capacity_follows(
        &caps,
        d.class,
        &format!("lvm lvcreate -q -y -W n -Z n -L {OOB_MIB}m -n oob {vg}"),
        |b| b - oob,
    )
    .await;
    let removed = capacity_follows(
        &caps,
        d.class,
        &format!("lvm lvremove -q -f {vg}/oob"),
        |b| b + oob,
    )
    .await;
    Run {
        per_node,
        bound_of: bound.len(),
        gone_of: gone.len(),
        bound: phase(bound.into_values().collect(), all_bound),
        gone: phase(gone.into_values().collect(), all_gone),
        capacity: [made, removed],
        idle,
        loaded,
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or(format!("not within {} s", CAPACITY_WAIT.as_secs()), |s| {
        format!("{s:.1}")
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .expect("usage: vm_cluster N DRIVER...");
    let drivers: Vec<&Driver> = args[1..]
        .iter()
        .map(|a| match a.as_str() {
            "ferrolvm" => &FERROLVM,
            "topolvm" => &TOPOLVM,
            other => panic!("unknown driver {other} (ferrolvm, topolvm)"),
        })
        .collect();
    assert!(!drivers.is_empty(), "usage: vm_cluster N DRIVER...");
    let c = kube::Client::try_default().await.expect("KUBECONFIG");
    let mut runs = Vec::new();
    for d in &drivers {
        eprintln!("vm_cluster: {n} claims with pods, {}", d.name);
        runs.push(race(&c, d, n).await);
    }

    println!("\n## {n} claims with pods at once (64 MiB thick, ext4), two nodes in the VM (TCG)");
    println!("| driver | phase | claims done of | median s | p99 s | total s |");
    println!("|---|---|---|---|---|---|");
    for (d, r) in drivers.iter().zip(&runs) {
        for (what, p, done, of) in [
            ("created → Bound", r.bound, r.bound_of, n),
            (
                "deleted → LogicalVolume gone",
                r.gone,
                r.gone_of,
                r.bound_of,
            ),
        ] {
            // Short of all: the total is the phase limit, the median and p99 of those done.
            let total = if done < of { " (limit)" } else { "" };
            println!(
                "| {} | {what} | {done} of {of} | {:.2} | {:.2} | {:.2}{total} |",
                d.name, p.0, p.1, p.2
            );
        }
    }
    println!("\n| driver | claims per node after binding | capacity follows lvm2's lvcreate, s | … its lvremove, s |");
    println!("|---|---|---|---|");
    for (d, r) in drivers.iter().zip(&runs) {
        println!(
            "| {} | node1 {}, node2 {} | {} | {} |",
            d.name,
            r.per_node[0],
            r.per_node[1],
            secs(r.capacity[0]),
            secs(r.capacity[1])
        );
    }
    println!("\n| driver | process | RSS idle MiB | RSS after binding MiB | peak (VmHWM) MiB |");
    println!("|---|---|---|---|---|");
    for (d, r) in drivers.iter().zip(&runs) {
        for (i, what) in ["node1", "node2", "controller"].iter().enumerate() {
            println!(
                "| {} | {what} | {:.1} | {:.1} | {:.1} |",
                d.name, r.idle[i].0, r.loaded[i].0, r.loaded[i].1
            );
        }
    }
    let by_name = |name: &str| {
        drivers
            .iter()
            .position(|d| d.name == name)
            .map(|i| &runs[i])
    };
    if let (Some(f), Some(t)) = (by_name("ferrolvm"), by_name("topolvm")) {
        println!(
            "\nratios TopoLVM / ferrolvm: bound median {:.1}, p99 {:.1}, total {:.1}; deleted total {:.1}",
            t.bound.0 / f.bound.0,
            t.bound.1 / f.bound.1,
            t.bound.2 / f.bound.2,
            t.gone.2 / f.gone.2
        );
        if f.bound_of < n {
            println!(
                "# no cluster-bound-{n} ratio: ferrolvm bound {} of {n}",
                f.bound_of
            );
        } else {
            if t.bound_of < n {
                println!(
                    "# cluster-bound-{n} is a lower bound: TopoLVM had {} of {n} Bound at the phase limit",
                    t.bound_of
                );
            }
            println!("RATIO cluster-bound-{n} {:.1}", t.bound.2 / f.bound.2);
        }
    }
}
