//! Benchmark inside the VM (not a test): CreateVolume + NodePublishVolume
//! against `ferrolvm node --standalone`, 100 volumes sequentially and 100
//! concurrently, beside lvm2's `lvcreate` alone for 100 volumes; and the
//! node process's resident memory idle and under that load.
//! Run with `cargo run -p vm-tests -- bench-csi`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ferrolvm_proto::csi::v1::controller_client::ControllerClient;
use ferrolvm_proto::csi::v1::node_client::NodeClient;
use ferrolvm_proto::csi::v1::volume_capability::{
    access_mode, AccessMode, AccessType, MountVolume,
};
use ferrolvm_proto::csi::v1::*;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
    }
}

async fn create_and_publish(ch: tonic::transport::Channel, name: String) -> Duration {
    let t = Instant::now();
    let v = ControllerClient::new(ch.clone())
        .create_volume(CreateVolumeRequest {
            name: name.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 64 << 20,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![cap()],
            ..Default::default()
        })
        .await
        .expect("CreateVolume")
        .into_inner()
        .volume
        .unwrap();
    NodeClient::new(ch)
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: v.volume_id,
            target_path: format!("/tmp/bench-mnt/{name}"),
            volume_capability: Some(cap()),
            ..Default::default()
        })
        .await
        .expect("NodePublishVolume");
    t.elapsed()
}

fn main() {
    let n = vm_bench_count("bench-csi");
    let ferro = env!("CARGO_BIN_EXE_ferrolvm");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        make_loop(dir.path(), "a", 16384),
        make_loop(dir.path(), "b", 16384),
    );
    let (da, db) = (a.0.display().to_string(), b.0.display().to_string());
    run(Command::new(ferro).args(["vgcreate", "--devices", &da, "csi-bench", &da]));
    run(lvm().args(["vgcreate", "--devices", &db, "lvm-bench", &db]));
    let conf = dir.path().join("node.yaml");
    std::fs::write(
        &conf,
        "device-classes:\n  - {name: thick, volume-group: csi-bench, default: true, spare-gb: 0}\n",
    )
    .unwrap();
    let sock = dir.path().join("csi.sock");
    let mut node = Command::new(ferro)
        .args([
            "node",
            "--devices",
            &da,
            "--config",
            conf.to_str().unwrap(),
            "--node-name",
            "vm",
            "--csi-endpoint",
            &format!("unix://{}", sock.display()),
            "--standalone",
            "--kubelet-dir",
            "/tmp/bench-mnt",
        ])
        .spawn()
        .expect("ferrolvm node");
    while !sock.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(node.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let path = sock.clone();
    let ch = rt.block_on(ferrolvm::csi::unix_channel(path)).unwrap();
    // Sequential, interleaved with lvm2's lvcreate of the same size.
    let (mut seq, mut lvm_times) = (Vec::new(), Vec::new());
    for i in 0..n {
        seq.push(rt.block_on(create_and_publish(ch.clone(), format!("seq-{i}"))));
        lvm_times.push(run(lvm().args([
            "lvcreate",
            "--devices",
            &db,
            "-n",
            &format!("lv{i}"),
            "-L",
            "64m",
            "lvm-bench",
        ])));
    }
    // Concurrent: all at once; each latency is its own, the wall time is the batch's.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pid = node.id();
    let p2 = peak.clone();
    let sampler = std::thread::spawn(move || {
        for _ in 0..600 {
            p2.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let wall = Instant::now();
    let conc: Vec<Duration> = rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| tokio::spawn(create_and_publish(ch.clone(), format!("conc-{i}"))))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let wall = wall.elapsed();
    let loaded = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(rss_kib(pid));
    let (lm, lp) = stats(lvm_times.clone());
    println!("| {n} volumes, in the VM under TCG | median | p99 | total |");
    println!("|---|---|---|---|");
    let (sm, sp) = stats(seq.clone());
    println!("| ferrolvm CreateVolume + NodePublishVolume (ext4), sequential | {sm:.1} ms | {sp:.1} ms | {:.1} s |", seq.iter().sum::<Duration>().as_secs_f64());
    let (cm, cp) = stats(conc);
    println!("| ferrolvm CreateVolume + NodePublishVolume (ext4), {n} concurrent | {cm:.1} ms | {cp:.1} ms | {:.1} s |", wall.as_secs_f64());
    println!("| lvm2 `lvcreate` alone (activate, no mkfs, no mount), sequential | {lm:.1} ms | {lp:.1} ms | {:.1} s |", lvm_times.iter().sum::<Duration>().as_secs_f64());
    println!();
    println!("| `ferrolvm node` resident memory | idle | peak under the concurrent load |");
    println!("|---|---|---|");
    println!(
        "| RSS | {:.1} MiB | {:.1} MiB |",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0
    );
    let _ = node.kill();
    let _ = node.wait();
    drop(sampler);
    delete_latency(ferro, dir.path(), n.min(50));
    for m in std::fs::read_dir("/tmp/bench-mnt")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = Command::new("umount").arg(m.path()).status();
    }
}

/// DeleteVolume with the wipe on (the default: the answer comes after the
/// rename commit, the zeroing runs in the background) and off, on two
/// identical VGs in the same run, and what the background wipe costs.
fn delete_latency(ferro: &str, dir: &std::path::Path, n: usize) {
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::NodeEngine;
    let (z, k) = (make_loop(dir, "wz", 4096), make_loop(dir, "wk", 4096));
    let (dz, dk) = (z.0.display().to_string(), k.0.display().to_string());
    run(Command::new(ferro).args(["vgcreate", "--devices", &dz, "wipe-on", &dz]));
    run(Command::new(ferro).args(["vgcreate", "--devices", &dk, "wipe-off", &dk]));
    let config = NodeConfig::parse(
        "device-classes:\n  - {name: on, volume-group: wipe-on, default: true, spare-gb: 0}\n  - {name: off, volume-group: wipe-off, spare-gb: 0, wipe: none}\n",
    )
    .unwrap();
    let engine = NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(vec![z.0.clone(), k.0.clone()])),
        config,
    );
    const SIZE: u64 = 64 << 20;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for i in 0..n {
        for (class, times) in [("on", &mut on), ("off", &mut off)] {
            let v = engine
                .create(&format!("del-{class}-{i}"), Some(class), SIZE, 0)
                .unwrap();
            let t = Instant::now();
            assert!(engine.delete(&v.id).unwrap());
            times.push(t.elapsed());
        }
    }
    let t = Instant::now();
    assert_eq!(engine.wipe_pending().unwrap(), n);
    let wipe = t.elapsed();
    let (onm, onp) = stats(on);
    let (offm, offp) = stats(off);
    println!();
    println!("| DeleteVolume, {n} thick volumes of 64 MiB, in the VM | median | p99 |");
    println!("|---|---|---|");
    println!("| `wipe: zero` (answered after the rename commit) | {onm:.1} ms | {onp:.1} ms |");
    println!("| `wipe: none` (deactivate and remove) | {offm:.1} ms | {offp:.1} ms |");
    println!(
        "| background wipe of all {n} (zero, then remove), per volume | {:.1} ms | total {:.1} s |",
        wipe.as_secs_f64() * 1000.0 / n as f64,
        wipe.as_secs_f64()
    );
}
