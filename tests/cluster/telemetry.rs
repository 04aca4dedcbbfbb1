//! Each server's /metrics, /healthz and /readyz: the node's series hold
//! what lvm2's own `vgs` and `lvs` report in the VM, the controller and the
//! extender count the calls this suite made, and every query of the
//! Grafana dashboard names a metric one of them serves.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use super::{lvm_vg_free, vmsh, wipes_done};

/// A plain HTTP/1.0 GET on the host: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// A node's endpoint, fetched inside the VM (it listens on the VM's loopback).
fn node_get(n: u32, path: &str) -> String {
    vmsh(&format!(
        "busybox wget -q -O- http://127.0.0.1:808{n}{path}"
    ))
}

/// `name{labels}` → value, for every sample line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The metric families a text declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key).unwrap_or_else(|| {
        panic!(
            "{key} not served; served: {:#?}",
            s.keys().collect::<Vec<_>>()
        )
    })
}

fn lvm(cmd: &str) -> String {
    vmsh(&format!("lvm {cmd}")).trim().to_string()
}

fn controller_addr() -> String {
    std::env::var("FERROLVM_CONTROLLER_METRICS").expect("FERROLVM_CONTROLLER_METRICS")
}

fn extender_addr() -> String {
    std::env::var("FERROLVM_EXTENDER").expect("FERROLVM_EXTENDER")
}

#[tokio::test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
async fn the_node_metrics_are_what_lvm2_reports() {
    wipes_done("vg1").await;
    // Nothing else changes vg1 now; read lvm2, then the node, then lvm2
    // again, and compare only if lvm2 saw the same VG both times.
    let seqno = || lvm("vgs --noheadings -o vg_seqno vg1");
    let before = seqno();
    let text = node_get(1, "/metrics");
    assert_eq!(before, seqno(), "vg1 changed during the scrape");
    let s = samples(&text);
    let l = |rest: &str| format!("{{node=\"node1\",{rest}}}");
    let thick = l("device_class=\"thick\"");
    let thin = l("device_class=\"thin\"");
    let bytes = |f: &str| -> f64 {
        lvm(&format!("vgs --noheadings --units b --nosuffix -o {f} vg1"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(&s, &format!("ferrolvm_volumegroup_available_bytes{thick}")),
        lvm_vg_free("vg1") as f64
    );
    assert_eq!(
        value(&s, &format!("ferrolvm_volumegroup_size_bytes{thick}")),
        bytes("vg_size")
    );
    assert_eq!(
        value(
            &s,
            &format!(
                "ferrolvm_volumegroup_metadata_free_bytes{}",
                l("volume_group=\"vg1\"")
            )
        ),
        bytes("vg_mda_free"),
        "vgs vg_mda_free"
    );
    // The pool, and each LV ferrolvm made (tagged with its CSI name).
    let pool_size: f64 = lvm("lvs --noheadings --units b --nosuffix -o lv_size vg1/pool")
        .parse()
        .unwrap();
    assert_eq!(
        value(&s, &format!("ferrolvm_thinpool_size_bytes{thin}")),
        pool_size
    );
    let lvs = lvm("lvs --noheadings --units b --nosuffix --separator , -o lv_name,lv_size,pool_lv,lv_tags vg1");
    let (mut thick_n, mut thin_n, mut thin_bytes) = (0.0, 0.0, 0.0);
    for row in lvs.lines() {
        let f: Vec<&str> = row.trim().split(',').collect();
        if !f.get(3).is_some_and(|t| t.contains("ferrolvm.io/name=")) {
            continue;
        }
        if f[2] == "pool" {
            thin_n += 1.0;
            thin_bytes += f[1].parse::<f64>().unwrap();
        } else {
            thick_n += 1.0;
        }
    }
    assert_eq!(
        value(&s, &format!("ferrolvm_volumes{thick}")),
        thick_n,
        "{lvs}"
    );
    assert_eq!(
        value(&s, &format!("ferrolvm_volumes{thin}")),
        thin_n,
        "{lvs}"
    );
    assert_eq!(
        value(
            &s,
            &format!("ferrolvm_thinpool_overprovisioned_available{thin}")
        ),
        (pool_size * 10.0 - thin_bytes).max(0.0),
        "10 × the pool less the thin volumes' sizes"
    );
    // Data% and Meta% as lvs prints them (two decimals), when active.
    let pct = lvm("lvs --noheadings --separator , -o data_percent,metadata_percent vg1/pool");
    let (data, meta) = pct.split_once(',').expect("two fields");
    for (name, lvs_says) in [("data", data), ("metadata", meta)] {
        let key = format!("ferrolvm_thinpool_{name}_percent{thin}");
        match lvs_says.trim().parse::<f64>() {
            Ok(p) => assert!(
                (value(&s, &key) - p).abs() <= 0.005 + 1e-9,
                "{key}: {} vs lvs {p}",
                value(&s, &key)
            ),
            Err(_) => assert!(!s.contains_key(&key), "{key} served for an inactive pool"),
        }
    }
    assert_eq!(
        value(
            &s,
            &format!("ferrolvm_wipe_backlog_bytes{}", l("volume_group=\"vg1\""))
        ),
        0.0
    );
    assert_eq!(
        value(&s, "ferrolvm_volumegroups_readable{node=\"node1\"}"),
        1.0
    );
    // This suite made volumes on vg1: commits and batches were counted.
    assert!(
        value(
            &s,
            &format!(
                "ferrolvm_commit_duration_seconds_count{}",
                l("volume_group=\"vg1\"")
            )
        ) > 0.0
    );
    assert!(
        value(
            &s,
            &format!(
                "ferrolvm_commit_batch_size_count{}",
                l("volume_group=\"vg1\"")
            )
        ) > 0.0
    );
    for family in ["ferrolvm_reconcile_errors", "ferrolvm_orphaned_volumes"] {
        assert!(families(&text).contains(family), "{family} not declared");
    }
    assert!(
        s.contains_key("ferrolvm_orphaned_volumes{node=\"node1\",kind=\"volume\"}"),
        "the orphan check ran"
    );
    // The node registers with kubelet itself: its socket is where kubelet
    // looks, and kubelet makes the node-side calls (the pod tests' volumes).
    vmsh("test -S /var/lib/kubelet-node1/plugins_registry/ferrolvm.io-reg.sock");
    for method in ["NodeGetInfo", "NodePublishVolume", "NodeUnpublishVolume"] {
        assert!(
            value(
                &s,
                &format!(
                    "ferrolvm_csi_calls_total{}",
                    l(&format!("method=\"{method}\",code=\"Ok\""))
                )
            ) > 0.0,
            "kubelet called {method}"
        );
    }
    assert_eq!(node_get(1, "/healthz").trim(), "ok");
    assert_eq!(node_get(1, "/readyz").trim(), "ok");
}

#[tokio::test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
async fn the_controller_and_the_extender_count_what_they_served() {
    let (status, text) = get(&controller_addr(), "/metrics");
    assert_eq!(status, 200);
    let s = samples(&text);
    assert!(
        value(
            &s,
            "ferrolvm_csi_calls_total{method=\"CreateVolume\",code=\"Ok\"}"
        ) > 0.0,
        "{text}"
    );
    assert!(
        value(
            &s,
            "ferrolvm_csi_call_duration_seconds_count{method=\"CreateVolume\"}"
        ) > 0.0
    );
    assert_eq!(
        value(&s, "ferrolvm_controller_leader"),
        1.0,
        "the only replica leads"
    );
    assert_eq!(get(&controller_addr(), "/readyz"), (200, "ok\n".into()));
    assert_eq!(get(&controller_addr(), "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(&controller_addr(), "/nothing").0, 404);
    let (status, text) = get(&extender_addr(), "/metrics");
    assert_eq!(status, 200);
    let s = samples(&text);
    let predicates: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("ferrolvm_extender_answers_total{verb=\"predicate\""))
        .map(|(_, v)| v)
        .sum();
    assert!(
        predicates > 0.0,
        "the extender scenario asked /predicate: {text}"
    );
    assert_eq!(get(&extender_addr(), "/readyz"), (200, "ok\n".into()));
}

#[tokio::test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
async fn every_dashboard_query_names_a_served_metric() {
    let mut served = families(&node_get(1, "/metrics"));
    served.extend(families(&get(&controller_addr(), "/metrics").1));
    served.extend(families(&get(&extender_addr(), "/metrics").1));
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana/ferrolvm.json")).unwrap();
    let name = regex::Regex::new(r"ferrolvm_[a-z_]+").unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            let names: Vec<&str> = name.find_iter(expr).map(|m| m.as_str()).collect();
            assert!(!names.is_empty(), "{expr} names no ferrolvm metric");
            for n in names {
                let family = ["_bucket", "_sum", "_count", "_total"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s))
                    .unwrap_or(n);
                assert!(
                    served.contains(family),
                    "the dashboard asks for {n}, which nothing serves; served: {served:?}"
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 15, "only {queries} queries");
}

/// Last of the suite: no call any component made with the chart's accounts
/// was refused by RBAC. A refused watch does not fail a sidecar's call at
/// once (it retries and logs), so the logs are read: every host process's,
/// and both nodes' in the VM.
#[tokio::test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
async fn what_ran_was_never_refused_by_rbac() {
    let ns = std::env::var("FERROLVM_NAMESPACE").expect("FERROLVM_NAMESPACE");
    let run =
        std::path::PathBuf::from(std::env::var_os("FERROLVM_RUN_DIR").expect("FERROLVM_RUN_DIR"));
    let account = format!("system:serviceaccount:{ns}:");
    let mut refused = Vec::new();
    let mut logs = 0;
    for entry in std::fs::read_dir(&run).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            logs += 1;
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            refused.extend(
                text.lines()
                    .filter(|l| l.contains("forbidden") && l.contains(&account))
                    .map(|l| format!("{}: {l}", path.display())),
            );
        }
    }
    assert!(logs >= 5, "only {logs} logs in {}", run.display());
    for n in [1, 2] {
        // Read in the VM: the whole log is more than vmsh carries back.
        let log = format!("/run/ferrolvm/node{n}.log");
        let lines: u64 = vmsh(&format!("wc -l < {log}")).trim().parse().unwrap();
        assert!(lines > 0, "node{n} logged nothing");
        // grep exits 1 on no match; the file is known to exist.
        let found = vmsh(&format!("grep forbidden {log}; true"));
        refused.extend(found.lines().map(|l| format!("node{n}: {l}")));
    }
    assert!(refused.is_empty(), "RBAC refused:\n{}", refused.join("\n"));
}
