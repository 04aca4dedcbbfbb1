//! Device-mapper tests. They need a kernel with device-mapper, so the host
//! run leaves them out (`#[ignore]`) and `cargo run -p vm-tests -- test`
//! runs them inside a QEMU guest with `--ignored`, one at a time.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn sh(cmd: &str, args: &[&str]) -> String {
    ok(
        Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}")),
        cmd,
        args,
    )
}

fn lv_attr(l: &Loops, lv: &str) -> String {
    l.lvm_ok(&["lvs", "--noheadings", "-o", "lv_attr", lv])
        .trim()
        .to_string()
}

fn dm_exists(name: &str) -> bool {
    Command::new("dmsetup")
        .args(["info", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn dm_driver_is_there() {
    let v = std::fs::read_to_string("/proc/misc").unwrap();
    assert!(
        v.contains("device-mapper"),
        "no device-mapper in /proc/misc: {v}"
    );
    sh("dmsetup", &["version"]);
}

/// ferrolvm's devices are the ones lvm2 would make: same name, uuid and
/// table; each tool deactivates what the other activated.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn activation_matches_lvm2() {
    let l = Loops::with_dm(2, 128);
    l.ferro_ok(&["vgcreate", "-s", "1m", "act-vg", l.dev(0), l.dev(1)]);
    l.ferro_ok(&["lvcreate", "-n", "lin-1", "-L", "8m", "act-vg"]);
    l.ferro_ok(&[
        "lvcreate", "-n", "st", "-i", "2", "-I", "64k", "-L", "16m", "act-vg",
    ]);
    l.ferro_ok(&["lvcreate", "-n", "multi", "-L", "4m", "act-vg", l.dev(0)]);
    // Grown while active: the table is reloaded with a second segment.
    l.ferro_ok(&["lvextend", "-L", "+4m", "act-vg/multi", l.dev(1)]);
    assert_eq!(
        sh("dmsetup", &["table", "act--vg-multi"]).lines().count(),
        2
    );
    for (lv, dm) in [
        ("lin-1", "act--vg-lin--1"),
        ("st", "act--vg-st"),
        ("multi", "act--vg-multi"),
    ] {
        let path = format!("act-vg/{lv}");
        assert_eq!(
            lv_attr(&l, &path).chars().nth(4),
            Some('a'),
            "lvm2 sees {lv} active"
        );
        assert!(
            Path::new(&format!("/dev/mapper/{dm}")).exists()
                && Path::new(&format!("/dev/act-vg/{lv}")).exists()
        );
        let ours = sh("dmsetup", &["table", dm]);
        let our_uuid = sh("dmsetup", &["info", "-c", "--noheadings", "-o", "uuid", dm]);
        // ferrolvm deactivates its own; lvm2 activates the same layout.
        l.ferro_ok(&["lvchange", "-an", &path]);
        assert!(
            !dm_exists(dm) && !Path::new(&format!("/dev/act-vg/{lv}")).exists(),
            "{lv} still there"
        );
        l.lvm_ok(&["lvchange", "-ay", &path]);
        assert_eq!(
            sh("dmsetup", &["table", dm]),
            ours,
            "{lv}: lvm2 loads a different table"
        );
        assert_eq!(
            sh("dmsetup", &["info", "-c", "--noheadings", "-o", "uuid", dm]),
            our_uuid
        );
        // ferrolvm deactivates lvm2's, lvm2 deactivates ferrolvm's.
        l.ferro_ok(&["lvchange", "-an", &path]);
        assert!(!dm_exists(dm), "ferrolvm left lvm2's {lv} active");
        l.ferro_ok(&["lvchange", "-ay", &path]);
        l.lvm_ok(&["lvchange", "-an", &path]);
        assert!(!dm_exists(dm), "lvm2 left ferrolvm's {lv} active");
        assert_eq!(lv_attr(&l, &path).chars().nth(4), Some('-'));
    }
    // An open LV is refused with a clear error and stays active.
    l.ferro_ok(&["lvchange", "-ay", "act-vg/lin-1"]);
    let held = std::fs::File::open("/dev/act-vg/lin-1").unwrap();
    let out = l.ferro(&["lvchange", "-an", "act-vg/lin-1"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
    assert!(dm_exists("act--vg-lin--1"));
    drop(held);
    l.ferro_ok(&["vgchange", "-ay", "act-vg"]);
    for lv in ["lin-1", "st", "multi"] {
        assert_eq!(
            lv_attr(&l, &format!("act-vg/{lv}")).chars().nth(4),
            Some('a')
        );
    }
    l.ferro_ok(&["vgchange", "-an", "act-vg"]);
    assert!(
        !sh("dmsetup", &["ls"]).contains("act--vg"),
        "vgchange -an left devices"
    );
    l.assert_vgck_clean("act-vg");
}

/// A new LV's first 4 KiB are zeroed, as lvm2 does; -Zn leaves them.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn new_lvs_start_zeroed() {
    let l = Loops::with_dm(1, 64);
    // Dirty the PV where the LV will land.
    l.ferro_ok(&["vgcreate", "-s", "1m", "z-vg", l.dev(0)]);
    l.ferro_ok(&["lvcreate", "-n", "dirty", "-L", "4m", "z-vg"]);
    std::fs::write("/dev/z-vg/dirty", vec![0xabu8; 8192]).unwrap();
    l.ferro_ok(&["lvremove", "z-vg/dirty"]);
    l.ferro_ok(&["lvcreate", "-n", "clean", "-L", "4m", "z-vg"]);
    let head = std::fs::read("/dev/z-vg/clean").unwrap();
    assert!(
        head[..4096].iter().all(|&b| b == 0),
        "first 4 KiB not zeroed"
    );
    assert!(
        head[4096..8192].iter().all(|&b| b == 0xab),
        "zeroed more than 4 KiB (or the LV moved)"
    );
}

fn fs_round_trip(l: &Loops, vg: &str, lv: &str, fs: &str) {
    let dev = format!("/dev/{vg}/{lv}");
    match fs {
        "ext4" => sh("mkfs.ext4", &["-q", "-F", &dev]),
        "xfs" => sh("mkfs.xfs", &["-q", "-f", &dev]),
        _ => sh("mkfs.btrfs", &["-q", "-f", &dev]),
    };
    let mnt = format!("/tmp/mnt-{lv}");
    std::fs::create_dir_all(&mnt).unwrap();
    sh("mount", &["-t", fs, &dev, &mnt]);
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let file = format!("{mnt}/data");
    std::fs::write(&file, &data).unwrap();
    sh("sync", &[]);
    let size = || {
        nix::sys::statvfs::statvfs(mnt.as_str())
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap()
    };
    let before = size();
    l.ferro_ok(&["lvextend", "-L", "+128m", &format!("{vg}/{lv}")]);
    match fs {
        "ext4" => sh("resize2fs", &[&dev]),
        "xfs" => sh("xfs_growfs", &[&mnt]),
        _ => sh("btrfs", &["filesystem", "resize", "max", &mnt]),
    };
    assert!(
        size() > before + (64 << 20),
        "{fs} on {lv} did not grow online: {before} -> {}",
        size()
    );
    assert!(
        std::fs::read(&file).unwrap() == data,
        "{fs} on {lv}: data changed after growing"
    );
    sh("umount", &[&mnt]);
    sh("mount", &["-t", fs, &dev, &mnt]);
    assert!(
        std::fs::read(&file).unwrap() == data,
        "{fs} on {lv}: data changed after remount"
    );
    sh("umount", &[&mnt]);
}

/// mkfs, mount, write, read back, grow online, read back: ext4, xfs and
/// btrfs on linear and striped LVs.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn filesystems_on_linear_and_striped_lvs_grow_online() {
    let l = Loops::with_dm(2, 1024);
    l.ferro_ok(&["vgcreate", "data-vg", l.dev(0), l.dev(1)]);
    for fs in ["ext4", "xfs", "btrfs"] {
        for striped in [false, true] {
            let lv = format!("{fs}-{}", if striped { "striped" } else { "linear" });
            let mut args = vec!["lvcreate", "-n", &lv, "-L", "320m"];
            if striped {
                args.extend(["-i", "2", "-I", "64k"]);
            }
            args.push("data-vg");
            l.ferro_ok(&args);
            fs_round_trip(&l, "data-vg", &lv, fs);
            l.ferro_ok(&["lvremove", &format!("data-vg/{lv}")]);
        }
    }
    l.assert_vgck_clean("data-vg");
}

/// A PV that starts failing writes in the middle of a commit: the command
/// fails with an error naming the device, and once the device is back both
/// tools read the VG as it was.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn failing_pv_gives_error_and_no_damage() {
    let l = Loops::with_dm(2, 64);
    let sectors = sh("blockdev", &["--getsz", l.dev(1)]).trim().to_string();
    let linear = format!("0 {sectors} linear {} 0", l.dev(1));
    sh("dmsetup", &["create", "flaky-pv", "--table", &linear]);
    let devs = format!("{},/dev/mapper/flaky-pv", l.dev(0));
    let run = |tool: &str, args: &[&str]| {
        let mut c = Command::new(if tool == "lvm" {
            "lvm"
        } else {
            env!("CARGO_BIN_EXE_ferrolvm")
        });
        c.arg(args[0])
            .args(["--devices", &devs])
            .args(&args[1..])
            .env("LVM_SUPPRESS_FD_WARNINGS", "1");
        c.output().unwrap()
    };
    let okr = |tool: &str, args: &[&str]| ok(run(tool, args), tool, args);
    okr(
        "ferrolvm",
        &[
            "vgcreate",
            "-s",
            "1m",
            "fault-vg",
            l.dev(0),
            "/dev/mapper/flaky-pv",
        ],
    );
    okr(
        "ferrolvm",
        &["lvcreate", "-an", "-n", "before", "-L", "4m", "fault-vg"],
    );
    let seqno = |tool: &str| {
        okr(tool, &["vgs", "--noheadings", "-o", "vg_seqno", "fault-vg"])
            .trim()
            .to_string()
    };
    let old = seqno("lvm");
    // Reads still work, writes fail: the scan succeeds, the commit does not.
    let flakey = format!("0 {sectors} flakey {} 0 0 5 1 error_writes", l.dev(1));
    sh("dmsetup", &["load", "flaky-pv", "--table", &flakey]);
    sh("dmsetup", &["resume", "flaky-pv"]);
    let out = run(
        "ferrolvm",
        &["lvcreate", "-an", "-n", "during", "-L", "4m", "fault-vg"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("flaky-pv"),
        "expected an I/O error naming the device: {err}"
    );
    sh("dmsetup", &["load", "flaky-pv", "--table", &linear]);
    sh("dmsetup", &["resume", "flaky-pv"]);
    assert_eq!(seqno("lvm"), old, "lvm2 sees a changed VG");
    assert_eq!(seqno("ferrolvm"), old);
    let names = okr("lvm", &["lvs", "--noheadings", "-o", "lv_name", "fault-vg"]);
    assert_eq!(names.split_whitespace().collect::<Vec<_>>(), vec!["before"]);
    let ck = run("lvm", &["vgck", "fault-vg"]);
    assert!(
        ck.status.success(),
        "vgck: {}",
        String::from_utf8_lossy(&ck.stderr)
    );
    okr(
        "ferrolvm",
        &["lvcreate", "-an", "-n", "after", "-L", "4m", "fault-vg"],
    );
    okr("ferrolvm", &["vgremove", "-f", "fault-vg"]);
    sh("dmsetup", &["remove", "flaky-pv"]);
}

/// `dmsetup table` with device numbers replaced by device names, so tables
/// made by two tools (with different minor numbers) compare.
fn named_tables(prefix: &str) -> Vec<String> {
    let info = sh(
        "dmsetup",
        &[
            "info",
            "-c",
            "--noheadings",
            "-o",
            "name,major,minor",
            "--separator",
            " ",
        ],
    );
    let names: Vec<(String, String)> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (format!("{}:{}", f[1], f[2]), f[0].to_string()))
        })
        .collect();
    let mut out: Vec<String> = sh("dmsetup", &["table"])
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    names
                        .iter()
                        .find(|(d, _)| d == w)
                        .map(|(_, n)| n.clone())
                        .unwrap_or_else(|| w.to_string())
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    out.sort();
    out
}

fn thin_check(l: &Loops, vg: &str, pool: &str) {
    // lvm2's component activation exposes the metadata LV read-only.
    l.lvm_ok(&["lvchange", "-ay", "-y", &format!("{vg}/{pool}_tmeta")]);
    let dev = format!(
        "/dev/mapper/{}",
        ferrolvm::lvm::activate::dm_name(vg, &format!("{pool}_tmeta"), None)
    );
    let out = Command::new("thin_check").arg(&dev).output().unwrap();
    l.lvm_ok(&["lvchange", "-an", &format!("{vg}/{pool}_tmeta")]);
    assert!(
        out.status.success(),
        "thin_check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write_dev(path: &str, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn read_dev(path: &str, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

/// A VG `vg` on the first loop device with a thin pool `pool` of `size`.
fn vg_with_pool(l: &Loops, vg: &str, size: &str) {
    l.ferro_ok(&["vgcreate", "-s", "4m", vg, l.dev(0)]);
    l.ferro_ok(&[
        "lvcreate",
        "--type",
        "thin-pool",
        "-L",
        size,
        "-n",
        "pool",
        vg,
    ]);
}

/// A VG `vg` on the first loop device and a node engine over it with one
/// class, `thick` (the default, no spare), as `ferrolvm node` would start.
fn thick_engine(l: &Loops, vg: &str) -> ferrolvm::node::NodeEngine {
    l.ferro_ok(&["vgcreate", "-s", "4m", vg, l.dev(0)]);
    let config = ferrolvm::node::config::NodeConfig::parse(&format!(
        "device-classes:\n  - {{name: thick, volume-group: {vg}, default: true, spare-gb: 0}}"
    ))
    .unwrap();
    ferrolvm::node::NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
        config,
    )
}

/// ferrolvm's thin pool, thin LV and snapshot: the same devices as lvm2's,
/// lvm2 activates them, thin_check is clean, the snapshot keeps its data.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn thin_pool_thin_lv_and_snapshot_match_lvm2() {
    let l = Loops::with_dm(1, 512);
    l.ferro_ok(&["vgcreate", "-s", "4m", "tvg", l.dev(0)]);
    l.ferro_ok(&[
        "lvcreate",
        "--type",
        "thin-pool",
        "-L",
        "64m",
        "-n",
        "pool0",
        "tvg",
    ]);
    l.ferro_ok(&["lvcreate", "-T", "tvg/pool0", "-V", "100m", "-n", "thin1"]);
    let (a, b) = (pattern(1), pattern(2));
    write_dev("/dev/tvg/thin1", &a);
    l.ferro_ok(&["lvcreate", "-s", "tvg/thin1", "-n", "snap1"]);
    write_dev("/dev/tvg/thin1", &b);
    assert!(
        !Path::new("/dev/tvg/snap1").exists(),
        "snapshots are skipped on activation, as in lvm2"
    );
    l.ferro_ok(&["lvchange", "-ay", "-K", "tvg/snap1"]);
    assert!(
        read_dev("/dev/tvg/snap1", a.len()) == a,
        "the snapshot lost the data of its moment"
    );
    assert!(read_dev("/dev/tvg/thin1", b.len()) == b);
    // Both tools report the same, pool usage included.
    let fields = "lv_name,lv_attr,lv_size,pool_lv,origin,segtype,data_percent,metadata_percent";
    let ours = l.ferro_ok(&[
        "lvs",
        "-a",
        "--reportformat",
        "json",
        "-o",
        fields,
        "--units",
        "b",
        "--nosuffix",
    ]);
    let theirs = l.lvm_ok(&[
        "lvs",
        "-a",
        "--reportformat",
        "json",
        "-o",
        fields,
        "--units",
        "b",
        "--nosuffix",
    ]);
    let (ours, theirs): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&ours).unwrap(),
        serde_json::from_str(&theirs).unwrap(),
    );
    assert_eq!(ours, theirs, "lvs -a differs");
    // Same device-mapper layout as lvm2 builds for the same LVs.
    let tables = named_tables("tvg-");
    l.ferro_ok(&["vgchange", "-an", "tvg"]);
    assert!(named_tables("tvg-").is_empty(), "vgchange -an left devices");
    l.lvm_ok(&["vgchange", "-ay", "-K", "tvg"]);
    assert_eq!(
        named_tables("tvg-"),
        tables,
        "lvm2 builds different devices"
    );
    assert!(read_dev("/dev/tvg/thin1", b.len()) == b && read_dev("/dev/tvg/snap1", a.len()) == a);
    l.lvm_ok(&["vgchange", "-an", "tvg"]);
    thin_check(&l, "tvg", "pool0");
    // Removal through the kernel protocol; lvm2 agrees afterwards.
    l.ferro_ok(&["lvremove", "tvg/snap1"]);
    l.ferro_ok(&["lvremove", "tvg/thin1"]);
    thin_check(&l, "tvg", "pool0");
    l.ferro_ok(&["lvremove", "tvg/pool0"]);
    assert_eq!(
        l.lvm_ok(&["lvs", "-a", "--noheadings", "-o", "lv_name", "tvg"])
            .trim(),
        ""
    );
    l.assert_vgck_clean("tvg");
}

/// A pool lvm2 made serves ferrolvm's thin LVs, and the other way round.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn thin_pools_are_shared_with_lvm2() {
    let l = Loops::with_dm(1, 512);
    l.lvm_ok(&["vgcreate", "-s", "4m", "svg", l.dev(0)]);
    l.lvm_ok(&[
        "lvcreate",
        "--type",
        "thin-pool",
        "-L",
        "64m",
        "-n",
        "lpool",
        "svg",
    ]);
    l.lvm_ok(&["lvcreate", "-T", "svg/lpool", "-V", "32m", "-n", "by-lvm"]);
    l.ferro_ok(&["lvcreate", "-T", "svg/lpool", "-V", "32m", "-n", "by-ferro"]);
    l.lvm_ok(&["lvcreate", "-T", "svg/lpool", "-V", "32m", "-n", "by-lvm-2"]);
    let data = pattern(7);
    write_dev("/dev/svg/by-ferro", &data);
    l.lvm_ok(&["vgchange", "-an", "svg"]);
    l.lvm_ok(&["vgchange", "-ay", "svg"]);
    assert!(read_dev("/dev/svg/by-ferro", data.len()) == data);
    l.ferro_ok(&["lvremove", "svg/by-lvm"]);
    l.lvm_ok(&["lvremove", "-f", "svg/by-ferro"]);
    l.ferro_ok(&["lvcreate", "-s", "svg/by-lvm-2", "-n", "snap"]);
    l.lvm_ok(&["vgchange", "-an", "svg"]);
    thin_check(&l, "svg", "lpool");
    l.assert_vgck_clean("svg");
}

/// A pool lvm2 made and activated alone (lvm2 2.03 maps an unused pool as
/// the thin-pool target under the public name, with no -tpool layer):
/// ferrolvm's node starts on it (recovery included) and makes thin LVs in
/// it, and lvm2 takes the pool back whole.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn a_pool_lvm2_activated_alone_serves_the_node() {
    let l = Loops::with_dm(1, 512);
    l.lvm_ok(&["vgcreate", "-s", "4m", "avg", l.dev(0)]);
    l.lvm_ok(&["lvcreate", "-q", "-L", "64m", "-T", "avg/pool"]);
    let config = ferrolvm::node::config::NodeConfig::parse(
        "device-classes:\n  - {name: thin, volume-group: avg, default: true, type: thin, thin-pool: {name: pool, overprovision-ratio: 4.0}}",
    )
    .unwrap();
    let engine = ferrolvm::node::NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
        config,
    );
    engine
        .recover()
        .expect("recovery on lvm2's pool-only layout");
    let v = engine.create("pvc-alone", None, 32 << 20, 0).unwrap();
    let data = pattern(3);
    let dev = engine.ensure_active(&v).unwrap();
    write_dev(&dev.display().to_string(), &data);
    assert!(read_dev(&dev.display().to_string(), data.len()) == data);
    l.lvm_ok(&["vgchange", "-an", "avg"]);
    l.lvm_ok(&["vgchange", "-ay", "avg"]);
    assert!(read_dev(&format!("/dev/avg/{}", v.lv), data.len()) == data);
    l.lvm_ok(&["vgchange", "-an", "avg"]);
    thin_check(&l, "avg", "pool");
    l.assert_vgck_clean("avg");
}

/// ext4, xfs and btrfs on thin LVs, grown online (a thin LV grows virtually).
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn filesystems_on_thin_lvs_grow_online() {
    let l = Loops::with_dm(1, 2048);
    l.ferro_ok(&["vgcreate", "fvg", l.dev(0)]);
    l.ferro_ok(&[
        "lvcreate",
        "--type",
        "thin-pool",
        "-L",
        "1500m",
        "-n",
        "pool",
        "fvg",
    ]);
    for fs in ["ext4", "xfs", "btrfs"] {
        let lv = format!("thin-{fs}");
        l.ferro_ok(&["lvcreate", "-T", "fvg/pool", "-V", "320m", "-n", &lv]);
        fs_round_trip(&l, "fvg", &lv, fs);
        l.ferro_ok(&["lvremove", &format!("fvg/{lv}")]);
    }
    l.ferro_ok(&["vgchange", "-an", "fvg"]);
    thin_check(&l, "fvg", "pool");
}

/// A ferrolvm process killed at each step of a thin create, snapshot and
/// removal leaves a state that the next run (alternately ferrolvm and
/// lvm2) completes: the kernel pool and the metadata agree, nothing is
/// queued, the LVs work, and thin_check and vgck are clean.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn thin_steps_survive_a_kill_at_each_point() {
    let l = Loops::with_dm(1, 512);
    vg_with_pool(&l, "kvg", "128m");
    l.ferro_ok(&["lvcreate", "-T", "kvg/pool", "-V", "16m", "-n", "base"]);
    let kill_at = |point: &str, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferrolvm"));
        c.arg(args[0])
            .args(["--devices", &l.list()])
            .args(&args[1..])
            .env("FERROLVM_FAILPOINT", point);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("failpoint {point} reached")),
            "{args:?} did not die at {point}: {err}"
        );
    };
    // Every failpoint, with the operations that pass it: thin-cleared is
    // after a create's last commit; thin-origin-suspended is inside a
    // snapshot, with its origin suspended.
    let points = [
        "thin-queued",
        "thin-message-sent",
        "thin-transaction-set",
        "thin-before-clear",
        "thin-cleared",
        "thin-origin-suspended",
    ];
    // The node engine on this pool, as `ferrolvm node` would start.
    let node = || {
        let config = ferrolvm::node::config::NodeConfig::parse(
            "device-classes:\n  - {name: thin, volume-group: kvg, default: true, type: thin, thin-pool: {name: pool}}",
        )
        .unwrap();
        ferrolvm::node::NodeEngine::new(
            ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
            config,
        )
    };
    let mut n = 0;
    for (i, point) in points.iter().enumerate() {
        for op in ["create", "snapshot", "remove"] {
            if (*point == "thin-cleared" && op == "remove")
                || (*point == "thin-origin-suspended" && op != "snapshot")
            {
                continue;
            }
            // ("snapshot*" names are reserved by lvm2.)
            let name = format!("{}{i}", &op[..3]);
            match op {
                "create" => kill_at(
                    point,
                    &["lvcreate", "-T", "kvg/pool", "-V", "8m", "-n", &name],
                ),
                "snapshot" => kill_at(point, &["lvcreate", "-s", "kvg/base", "-n", &name]),
                _ => {
                    l.ferro_ok(&["lvcreate", "-T", "kvg/pool", "-V", "8m", "-n", &name]);
                    kill_at(point, &["lvremove", &format!("kvg/{name}")]);
                }
            }
            // The next run completes it: ferrolvm and lvm2 in turn.
            n += 1;
            // lvm2 2.03 cannot finish a snapshot whose create_snap the kernel
            // applied before set_transaction_id (it resends it and gets
            // EEXIST; its own commands have the same window); ferrolvm can.
            let lvm_can = !(op == "snapshot" && *point == "thin-message-sent");
            if *point == "thin-origin-suspended" {
                // The tenant's origin is frozen until someone resumes it: the
                // node does at start.
                let base = "/sys/block";
                let suspended = |name: &str| {
                    std::fs::read_dir(base).unwrap().flatten().any(|e| {
                        std::fs::read_to_string(e.path().join("dm/name"))
                            .is_ok_and(|n| n.trim() == name)
                            && std::fs::read_to_string(e.path().join("dm/suspended"))
                                .is_ok_and(|v| v.trim() == "1")
                    })
                };
                assert!(suspended("kvg-base"), "the kill left the origin suspended");
                let engine = node();
                // The replay of the queued create_snap resumes it; the
                // explicit pass after it would otherwise.
                engine.recover().unwrap();
                assert!(!suspended("kvg-base"), "recovery resumed the origin");
                assert_eq!(
                    engine.recover().unwrap(),
                    Vec::<String>::new(),
                    "nothing left to do"
                );
            } else if n % 2 == 0 || !lvm_can {
                l.ferro_ok(&["lvchange", "-ay", "kvg/pool"]);
            } else {
                // lvm2 2.03 replays a pool's queued messages in its next thin
                // operation on that pool (not on plain activation).
                l.lvm_ok(&[
                    "lvcreate",
                    "-T",
                    "kvg/pool",
                    "-V",
                    "4m",
                    "-n",
                    &format!("fix{n}"),
                ]);
            }
            let vgs = l.lvm_ok(&["lvs", "--noheadings", "-o", "lv_name", "kvg"]);
            assert_eq!(
                vgs.split_whitespace().any(|x| x == name),
                op != "remove",
                "{op} killed at {point}: LV presence wrong: {vgs}"
            );
            let text = l.ferro_ok(&["lvs", "--reportformat", "json", "-o", "lv_name", "kvg"]);
            assert!(text.contains("base"));
            if op == "create" {
                l.ferro_ok(&["lvchange", "-ay", &format!("kvg/{name}")]);
                let d = pattern(i as u8);
                write_dev(&format!("/dev/kvg/{name}"), &d);
                assert!(read_dev(&format!("/dev/kvg/{name}"), d.len()) == d);
            }
        }
    }
    // A thin LV left suspended with nothing queued: the explicit pass resumes it.
    let out = Command::new("dmsetup")
        .args(["suspend", "kvg-base"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let engine = node();
    assert_eq!(engine.recover().unwrap(), vec!["base".to_string()]);
    l.ferro_ok(&["vgchange", "-an", "kvg"]);
    l.lvm_ok(&["vgchange", "-an", "kvg"]);
    thin_check(&l, "kvg", "pool");
    l.assert_vgck_clean("kvg");
}

/// A filesystem on a thin LV, snapshotted while mounted: the snapshot
/// mounts and holds the files of its moment; the origin moves on.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn thin_snapshots_hold_filesystem_state() {
    let l = Loops::with_dm(1, 1024);
    l.ferro_ok(&["vgcreate", "svg", l.dev(0)]);
    l.ferro_ok(&[
        "lvcreate",
        "--type",
        "thin-pool",
        "-L",
        "900m",
        "-n",
        "pool",
        "svg",
    ]);
    for fs in ["ext4", "xfs", "btrfs"] {
        let lv = format!("o-{fs}");
        let snap = format!("s-{fs}");
        l.ferro_ok(&["lvcreate", "-T", "svg/pool", "-V", "320m", "-n", &lv]);
        let dev = format!("/dev/svg/{lv}");
        match fs {
            "ext4" => sh("mkfs.ext4", &["-q", "-F", &dev]),
            "xfs" => sh("mkfs.xfs", &["-q", "-f", &dev]),
            _ => sh("mkfs.btrfs", &["-q", "-f", &dev]),
        };
        let (mo, ms) = (format!("/tmp/{lv}"), format!("/tmp/{snap}"));
        std::fs::create_dir_all(&mo).unwrap();
        std::fs::create_dir_all(&ms).unwrap();
        sh("mount", &["-t", fs, &dev, &mo]);
        std::fs::write(format!("{mo}/f"), b"before").unwrap();
        sh("sync", &[]);
        // Suspending the origin for the snapshot freezes the mounted
        // filesystem (device-mapper's lockfs), so the snapshot is consistent.
        l.ferro_ok(&["lvcreate", "-s", &format!("svg/{lv}"), "-n", &snap]);
        std::fs::write(format!("{mo}/f"), b"after").unwrap();
        sh("sync", &[]);
        // A snapshot carries its origin's filesystem UUID: unmount the origin for btrfs, use nouuid for xfs.
        if fs == "btrfs" {
            sh("umount", &[&mo]);
        }
        l.ferro_ok(&["lvchange", "-ay", "-K", &format!("svg/{snap}")]);
        let opts = if fs == "xfs" { "nouuid" } else { "defaults" };
        sh(
            "mount",
            &["-t", fs, "-o", opts, &format!("/dev/svg/{snap}"), &ms],
        );
        assert_eq!(
            std::fs::read(format!("{ms}/f")).unwrap(),
            b"before",
            "{fs}: the snapshot moved on"
        );
        sh("umount", &[&ms]);
        if fs != "btrfs" {
            assert_eq!(std::fs::read(format!("{mo}/f")).unwrap(), b"after");
            sh("umount", &[&mo]);
        }
        l.ferro_ok(&["lvremove", &format!("svg/{snap}")]);
        l.ferro_ok(&["lvremove", &format!("svg/{lv}")]);
    }
    l.ferro_ok(&["vgchange", "-an", "svg"]);
    thin_check(&l, "svg", "pool");
}

/// `lvremove --discard` hands the freed extents back to the device.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn lvremove_discard_frees_the_extents() {
    let l = Loops::with_dm(1, 64);
    l.ferro_ok(&["vgcreate", "-s", "1m", "dvg", l.dev(0)]);
    l.ferro_ok(&["lvcreate", "-n", "keep", "-L", "4m", "dvg"]);
    l.ferro_ok(&["lvcreate", "-n", "gone", "-L", "4m", "dvg"]);
    write_dev("/dev/dvg/keep", &pattern(3)[..1 << 20]);
    write_dev("/dev/dvg/gone", &pattern(4)[..1 << 20]);
    // The PV offset of "gone": pe_start + its first extent.
    let seg = l.lvm_ok(&["lvs", "--noheadings", "-o", "seg_pe_ranges", "dvg/gone"]);
    let first: u64 = seg
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let offset = (1 << 20) + first * (1 << 20);
    let on_pv = |at: u64| {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(l.dev(0)).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        let mut b = vec![0u8; 1 << 20];
        f.read_exact(&mut b).unwrap();
        b
    };
    assert!(
        on_pv(offset) == pattern(4)[..1 << 20],
        "test set-up: data not where expected"
    );
    l.ferro_ok(&["lvremove", "--discard", "dvg/gone"]);
    sh("blockdev", &["--flushbufs", l.dev(0)]);
    assert!(
        on_pv(offset).iter().all(|&b| b == 0),
        "discarded extents still hold data"
    );
    assert!(
        read_dev("/dev/dvg/keep", 1 << 20) == pattern(3)[..1 << 20],
        "discard hit a neighbour"
    );
}

/// The CSI node engine: 100 concurrent creates on one VG all succeed in a
/// handful of commits (group commit), lvm2 sees them active; retries are
/// idempotent, a conflicting retry is refused, a restarted engine finds
/// its volumes by name, and delete and expand behave as CSI expects.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn csi_engine_group_commit_idempotency_and_restart() {
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::{NodeEngine, VolumeError};
    use std::sync::Arc;
    let l = Loops::with_dm(2, 1024);
    l.ferro_ok(&["vgcreate", "-s", "4m", "cvg", l.dev(0), l.dev(1)]);
    let config = || {
        NodeConfig::parse(
            "device-classes:\n  - {name: ssd, volume-group: cvg, default: true, spare-gb: 0}",
        )
        .unwrap()
    };
    let engine = Arc::new(NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
        config(),
    ));
    let before = l.seqno("cvg");
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let e = engine.clone();
            std::thread::spawn(move || e.create(&format!("pvc-{i:03}"), None, 4 << 20, 0))
        })
        .collect();
    let vols: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let commits = l.seqno("cvg") - before;
    assert!(
        commits <= 25,
        "100 concurrent creates took {commits} commits: no group commit"
    );
    let mut ids: Vec<_> = vols.iter().map(|v| v.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    let lvs = l.lvm_ok(&["lvs", "--noheadings", "-o", "lv_name,lv_attr", "cvg"]);
    assert_eq!(
        lvs.lines()
            .filter(|x| x
                .split_whitespace()
                .nth(1)
                .is_some_and(|a| a.chars().nth(4) == Some('a')))
            .count(),
        100,
        "{lvs}"
    );
    l.assert_vgck_clean("cvg");
    // Retries are idempotent; a retry with an incompatible size is refused.
    let again = engine.create("pvc-007", None, 4 << 20, 0).unwrap();
    assert_eq!(again.id, vols[7].id);
    assert!(matches!(
        engine.create("pvc-007", None, 64 << 20, 0),
        Err(VolumeError::Conflict { .. })
    ));
    // A restarted engine (a new process would do the same) finds everything by name.
    let restarted = NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
        config(),
    );
    let listed = restarted.list().unwrap();
    assert_eq!(listed.len(), 100);
    assert_eq!(
        restarted
            .create("pvc-042", None, 4 << 20, 8 << 20)
            .unwrap()
            .id,
        vols[42].id
    );
    // Names that are not LV names still work, and keep their name.
    let odd = restarted
        .create("sanity volume: with spaces", None, 1 << 20, 0)
        .unwrap();
    assert_eq!(odd.name, "sanity volume: with spaces");
    assert!(odd.lv.starts_with("csi-"));
    // Expand and delete.
    assert_eq!(
        restarted.expand(&vols[1].id, 12 << 20, 0).unwrap(),
        12 << 20
    );
    assert!(restarted.delete(&vols[1].id).unwrap());
    assert!(
        !restarted.delete(&vols[1].id).unwrap(),
        "a second delete finds nothing and is fine"
    );
    assert!(matches!(
        restarted.expand("no-such-id", 1, 0),
        Err(VolumeError::NotFound(_))
    ));
    assert_eq!(restarted.list().unwrap().len(), 100);
    l.assert_vgck_clean("cvg");
    l.ferro_ok(&["vgremove", "-f", "cvg"]);
}

/// NodeGetVolumeHealth reports a suspended or missing device as unusable.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn volume_condition_follows_the_device() {
    let l = Loops::with_dm(1, 64);
    l.ferro_ok(&["vgcreate", "-s", "1m", "hvg", l.dev(0)]);
    l.ferro_ok(&["lvcreate", "-n", "h", "-L", "4m", "hvg"]);
    let dm = ferrolvm::lvm::activate::Dm::open().unwrap();
    assert_eq!(dm.trouble("hvg-h"), None);
    sh("dmsetup", &["suspend", "hvg-h"]);
    assert!(dm.trouble("hvg-h").is_some_and(|t| t.contains("suspended")));
    sh("dmsetup", &["resume", "hvg-h"]);
    l.ferro_ok(&["lvchange", "-an", "hvg/h"]);
    assert!(dm.trouble("hvg-h").is_some_and(|t| t.contains("missing")));
}

/// Group commit for thin classes: 50 concurrent thin creates share pool
/// transactions (two commits per batch), all work, and thin_check is clean.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn csi_engine_groups_thin_creates() {
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::NodeEngine;
    use std::sync::Arc;
    let l = Loops::with_dm(1, 1024);
    vg_with_pool(&l, "gvg", "512m");
    let config = NodeConfig::parse("device-classes:\n  - {name: thin, volume-group: gvg, type: thin, default: true, thin-pool: {name: pool, overprovision-ratio: 10.0}}").unwrap();
    let engine = Arc::new(NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
        config,
    ));
    let before = l.seqno("gvg");
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let e = engine.clone();
            std::thread::spawn(move || e.create(&format!("pvc-thin-{i:02}"), None, 16 << 20, 0))
        })
        .collect();
    let vols: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let commits = l.seqno("gvg") - before;
    eprintln!("50 concurrent thin creates: {commits} commits");
    assert!(
        commits < 50,
        "50 thin creates took {commits} commits: no group commit"
    );
    for v in vols.iter().step_by(7) {
        let dev = format!(
            "/dev/mapper/{}",
            ferrolvm::lvm::activate::dm_name(&v.vg, &v.lv, None)
        );
        let d = pattern(v.lv.len() as u8);
        write_dev(&dev, &d);
        assert!(read_dev(&dev, d.len()) == d, "{} does not keep data", v.lv);
    }
    let listed = engine.list().unwrap();
    assert_eq!(listed.len(), 50);
    l.ferro_ok(&["vgchange", "-an", "gvg"]);
    thin_check(&l, "gvg", "pool");
    l.assert_vgck_clean("gvg");
}

/// A tenant who owns a block volume writes onto it a checksum-valid copy of
/// the node's VG (same VG and PV uuids, a higher seqno, another layout). The
/// node scans every block device, as it does when installed without
/// `--devices`, yet sees, reports and writes only the real VG, and the
/// tenant's bytes stay as the tenant wrote them.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn a_tenant_cannot_steer_the_scan() {
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::NodeEngine;
    let l = Loops::with_dm(1, 256);
    l.ferro_ok(&["vgcreate", "-s", "4m", "forgevg", l.dev(0)]);
    let config = NodeConfig::parse(
        "device-classes:\n  - {name: ssd, volume-group: forgevg, default: true, spare-gb: 0}",
    )
    .unwrap();
    // No --devices: every block device is a candidate, the tenant's LV included.
    let engine = NodeEngine::new(ferrolvm::lvm::host::Host::load(None), config);
    let tenant = engine.create("tenant-block", None, 16 << 20, 0).unwrap();
    let tenant_dev = format!(
        "/dev/mapper/{}",
        ferrolvm::lvm::activate::dm_name(&tenant.vg, &tenant.lv, None)
    );
    // The forgery: the PV's head (label and metadata area) copied onto the
    // volume, then a different layout committed onto that copy through a loop
    // device over the volume, as any tool of the tenant's could.
    write_dev(&tenant_dev, &read_dev(l.dev(0), 1 << 20));
    let out = Command::new("losetup")
        .args(["-f", "--show", &tenant_dev])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup over the tenant volume failed"
    );
    let over = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let ferro = env!("CARGO_BIN_EXE_ferrolvm");
    let forged = Command::new(ferro)
        .args([
            "lvcreate",
            "--devices",
            &over,
            "-an",
            "-n",
            "forged",
            "-L",
            "8m",
            "forgevg",
        ])
        .output()
        .unwrap();
    assert!(Command::new("losetup")
        .args(["-d", &over])
        .status()
        .unwrap()
        .success());
    assert!(
        forged.status.success(),
        "the forgery itself failed: {}",
        String::from_utf8_lossy(&forged.stderr)
    );
    let tenant_bytes = read_dev(&tenant_dev, 1 << 20);
    let seqno = l.seqno("forgevg");

    // What the node reports is the real VG.
    let listed: Vec<String> = engine.list().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(listed, vec!["tenant-block".to_string()]);
    // What the node writes is the real VG, one commit further.
    let after = engine.create("after-forgery", None, 4 << 20, 0).unwrap();
    assert_eq!(l.seqno("forgevg"), seqno + 1);
    let names = l.lv_names(false);
    assert!(
        names.contains(&after.lv)
            && names.contains(&tenant.lv)
            && !names.contains(&"forged".to_string()),
        "lvm2 on the real PV sees {names:?}"
    );
    l.assert_vgck_clean("forgevg");
    // And the tenant's bytes are untouched.
    assert!(
        read_dev(&tenant_dev, 1 << 20) == tenant_bytes,
        "the node wrote onto a tenant's volume"
    );
    assert!(engine.delete(&after.id).unwrap() && engine.delete(&tenant.id).unwrap());
}

/// Deleting a volume that something holds open for a moment (udev's blkid,
/// a scanner) waits it out, as lvm2's retry_deactivation does; one held open
/// for good is refused as in use (FailedPrecondition), naming the holders.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn delete_waits_out_a_transient_open_and_refuses_a_lasting_one() {
    use ferrolvm::csi::backend::{BackendError, ErrorKind};
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::{NodeEngine, VolumeError};
    let l = Loops::with_dm(1, 256);
    l.ferro_ok(&["vgcreate", "-s", "4m", "busyvg", l.dev(0)]);
    let config = NodeConfig::parse(
        "device-classes:\n  - {name: ssd, volume-group: busyvg, default: true, spare-gb: 0}",
    )
    .unwrap();
    let engine = NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
        config,
    );
    let dev = |v: &ferrolvm::node::Volume| {
        format!(
            "/dev/mapper/{}",
            ferrolvm::lvm::activate::dm_name(&v.vg, &v.lv, None)
        )
    };

    let brief = engine.create("brief", None, 8 << 20, 0).unwrap();
    let held = std::fs::File::open(dev(&brief)).unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(600));
        drop(held);
    });
    assert!(
        engine.delete(&brief.id).unwrap(),
        "a transient open must be waited out"
    );
    closer.join().unwrap();
    assert!(engine.find(&brief.id).unwrap().is_none());

    let lasting = engine.create("lasting", None, 8 << 20, 0).unwrap();
    let held = std::fs::File::open(dev(&lasting)).unwrap();
    let err = engine.delete(&lasting.id).unwrap_err();
    assert!(
        matches!(&err, VolumeError::InUse(m) if m.contains("open 1 times")),
        "{err:?}"
    );
    assert_eq!(BackendError::from(err).kind, ErrorKind::FailedPrecondition);
    assert!(
        engine.find(&lasting.id).unwrap().is_some(),
        "nothing was removed"
    );
    drop(held);
    assert!(engine.delete(&lasting.id).unwrap());
}

/// Publish targets: only normalised paths under the configured root, walked
/// without following symlinks; a target holding another device's mount is
/// refused both ways; mount options split into VFS flags and data; a foreign
/// signature is never mkfs'd over; xfs clones mount beside their origin
/// (`nouuid`); concurrent publishes of one volume make one filesystem.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn publish_targets_and_mounts_are_checked() {
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::mounts::{self, Publish};
    use ferrolvm::node::target;
    use ferrolvm::node::{NodeEngine, Source, VolumeError};
    use std::sync::Arc;
    let l = Loops::with_dm(1, 1024);
    vg_with_pool(&l, "pubvg", "512m");
    let config = NodeConfig::parse(
        "device-classes:\n  - {name: thick, volume-group: pubvg, default: true, spare-gb: 0}\n  - {name: thin, volume-group: pubvg, type: thin, thin-pool: {name: pool, overprovision-ratio: 4.0}}",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kubelet");
    std::fs::create_dir_all(root.join("pods")).unwrap();
    let engine = Arc::new(
        NodeEngine::new(
            ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
            config,
        )
        .with_publish_roots(vec![root.clone()]),
    );
    let fs = |fs_type: &str, flags: &[&str]| Publish {
        block: false,
        fs_type: fs_type.into(),
        mount_flags: flags.iter().map(|s| s.to_string()).collect(),
        readonly: false,
    };
    let at = |rel: &str| format!("{}/{rel}", root.display());
    let check = |p: &str| target::check(p, &engine.publish_roots);
    let v = engine.create("pub-ext4", None, 64 << 20, 0).unwrap();

    // Paths outside the root, or not normalised: refused before anything happens.
    let precious = dir.path().join("precious");
    std::fs::write(&precious, b"keep").unwrap();
    for bad in [
        "/etc/passwd".to_string(),
        precious.display().to_string(),
        at("pods/../../precious"),
        at("pods/./x"),
        root.display().to_string(),
    ] {
        assert!(matches!(check(&bad), Err(VolumeError::Invalid(_))), "{bad}");
    }
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep");
    // A symlink on the way out of the root: refused, nothing made outside.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("pods/evil")).unwrap();
    let t = check(&at("pods/evil/target")).unwrap();
    assert!(matches!(
        mounts::publish(&engine, &v.id, &t, &fs("ext4", &[])),
        Err(VolumeError::Invalid(_))
    ));
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // A target where another device is mounted: refused both ways, left mounted.
    let other = root.join("pods/other/mnt");
    std::fs::create_dir_all(&other).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &other,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(other.join("theirs"), b"x").unwrap();
    let t = check(&at("pods/other/mnt")).unwrap();
    assert!(matches!(
        mounts::unpublish(&engine, &v.id, &t),
        Err(VolumeError::TargetOccupied(_))
    ));
    assert!(matches!(
        mounts::publish(&engine, &v.id, &t, &fs("ext4", &[])),
        Err(VolumeError::TargetOccupied(_))
    ));
    assert!(
        other.join("theirs").exists(),
        "the other mount is untouched"
    );
    nix::mount::umount(&other).unwrap();

    // Flags go to mount(2) as flags: ext4 would refuse "noexec" as data.
    let t = check(&at("pods/p1/volumes/ext4")).unwrap();
    mounts::publish(
        &engine,
        &v.id,
        &t,
        &fs("ext4", &["noexec", "nosuid,noatime"]),
    )
    .unwrap();
    mounts::publish(&engine, &v.id, &t, &fs("ext4", &[])).expect("publishing again is a no-op");
    let line = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(t.path.to_str().unwrap()))
        .map(String::from)
        .expect("mounted at the target");
    for f in ["noexec", "nosuid", "noatime"] {
        assert!(line.contains(f), "{f} missing from {line}");
    }
    mounts::unpublish(&engine, &v.id, &t).unwrap();
    assert!(!t.path.exists(), "unpublish removes the target");
    mounts::unpublish(&engine, &v.id, &t).expect("a target already gone is fine");

    // A foreign signature is an error, never mkfs'd over.
    let swap = engine.create("pub-swap", None, 16 << 20, 0).unwrap();
    let swap_dev = format!(
        "/dev/mapper/{}",
        ferrolvm::lvm::activate::dm_name(&swap.vg, &swap.lv, None)
    );
    assert!(Command::new("mkswap")
        .arg(&swap_dev)
        .output()
        .unwrap()
        .status
        .success());
    let t = check(&at("pods/p2/volumes/swap")).unwrap();
    assert!(
        matches!(mounts::publish(&engine, &swap.id, &t, &fs("ext4", &[])), Err(VolumeError::Invalid(m)) if m.contains("swap"))
    );
    assert_eq!(
        mounts::probe(Path::new(&swap_dev)).unwrap(),
        mounts::Signature::Other("swap".into())
    );
    // The requested filesystem must match the one found.
    let t = check(&at("pods/p2/volumes/xfs-on-ext4")).unwrap();
    assert!(matches!(
        mounts::publish(&engine, &v.id, &t, &fs("xfs", &[])),
        Err(VolumeError::Invalid(_))
    ));

    // xfs: a clone mounts beside its origin (same uuid, so nouuid).
    let origin = engine
        .create("pub-xfs", Some("thin"), 320 << 20, 0)
        .unwrap();
    let t1 = check(&at("pods/p3/volumes/origin")).unwrap();
    mounts::publish(&engine, &origin.id, &t1, &fs("xfs", &[])).unwrap();
    std::fs::write(t1.path.join("f"), b"origin").unwrap();
    nix::unistd::sync();
    let clone = engine
        .create_from(
            "pub-xfs-clone",
            Some("thin"),
            320 << 20,
            0,
            &Source::Volume(origin.id.clone()),
        )
        .unwrap();
    let t2 = check(&at("pods/p3/volumes/clone")).unwrap();
    mounts::publish(&engine, &clone.id, &t2, &fs("xfs", &[]))
        .expect("the clone mounts beside its origin");
    assert_eq!(std::fs::read(t2.path.join("f")).unwrap(), b"origin");
    mounts::unpublish(&engine, &clone.id, &t2).unwrap();
    mounts::unpublish(&engine, &origin.id, &t1).unwrap();

    // Concurrent publishes of a fresh volume at two targets: one mkfs, one filesystem.
    let fresh = engine.create("pub-race", None, 64 << 20, 0).unwrap();
    let targets: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| check(&at(&format!("pods/p4/volumes/{n}"))).unwrap())
        .collect();
    let handles: Vec<_> = targets
        .iter()
        .cloned()
        .map(|t| {
            let e = engine.clone();
            let id = fresh.id.clone();
            std::thread::spawn(move || mounts::publish(&e, &id, &t, &fs("ext4", &[])))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    std::fs::write(targets[0].path.join("shared"), b"one filesystem").unwrap();
    assert_eq!(
        std::fs::read(targets[1].path.join("shared")).unwrap(),
        b"one filesystem"
    );
    for t in &targets {
        mounts::unpublish(&engine, &fresh.id, t).unwrap();
    }
}

/// `vgremove -f` takes down every device of the VG — thin LVs, then each
/// pool with its `-tpool`, `_tdata` and `_tmeta` layers, then the rest — so
/// no table keeps mapping extents of a VG that is gone.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn vgremove_force_takes_down_thin_pools_and_their_layers() {
    let l = Loops::with_dm(1, 512);
    vg_with_pool(&l, "rmvg", "64m");
    l.ferro_ok(&["lvcreate", "-T", "rmvg/pool", "-V", "128m", "-n", "thin"]);
    l.ferro_ok(&["lvcreate", "-n", "lin", "-L", "8m", "rmvg"]);
    let devices = || -> Vec<String> {
        std::fs::read_dir("/sys/block")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("dm/name")).ok())
            .map(|n| n.trim().to_string())
            .filter(|n| n.starts_with("rmvg-"))
            .collect()
    };
    let before = devices();
    assert!(
        before.iter().any(|n| n.ends_with("-tpool")) && before.len() >= 5,
        "{before:?}"
    );
    l.ferro_ok(&["vgremove", "-f", "rmvg"]);
    assert_eq!(
        devices(),
        Vec::<String>::new(),
        "devices left after vgremove -f"
    );
}

/// A tenant fills its block volume with a pattern and deletes it; the next
/// volume on those extents reads zeros only. Until wiped, the extents stay
/// allocated (capacity does not count them) — also across a restart, which
/// finishes the wipe. With `wipe: none` the next tenant reads the pattern,
/// which shows what the wipe prevents.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn deleted_volumes_are_wiped_before_their_extents_are_reused() {
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::NodeEngine;
    let l = Loops::with_dm(2, 256);
    l.ferro_ok(&["vgcreate", "-s", "4m", "wipevg", l.dev(0)]);
    l.ferro_ok(&["vgcreate", "-s", "4m", "keepvg", l.dev(1)]);
    let config = || {
        NodeConfig::parse(
            "device-classes:\n  - {name: zero, volume-group: wipevg, default: true, spare-gb: 0}\n  - {name: none, volume-group: keepvg, spare-gb: 0, wipe: none}",
        )
        .unwrap()
    };
    let host = || ferrolvm::lvm::host::Host::load(Some(l.devs.clone()));
    let engine = NodeEngine::new(host(), config());
    const MIB16: u64 = 16 << 20;
    let dev = |v: &ferrolvm::node::Volume| {
        format!(
            "/dev/mapper/{}",
            ferrolvm::lvm::activate::dm_name(&v.vg, &v.lv, None)
        )
    };
    let ranges = |v: &ferrolvm::node::Volume| {
        l.lvm_ok(&[
            "lvs",
            "--noheadings",
            "-o",
            "seg_pe_ranges",
            &format!("{}/{}", v.vg, v.lv),
        ])
        .trim()
        .to_string()
    };
    for (class, wiped) in [("zero", true), ("none", false)] {
        let free = engine.capacity(Some(class)).unwrap();
        let a = engine
            .create(&format!("tenant-a-{class}"), Some(class), MIB16, 0)
            .unwrap();
        let a_ranges = ranges(&a);
        let pattern: Vec<u8> = (0..16).flat_map(|i| pattern(i as u8)).collect();
        write_dev(&dev(&a), &pattern);
        assert!(engine.delete(&a.id).unwrap());
        if wiped {
            assert_eq!(
                engine.capacity(Some(class)).unwrap(),
                free - MIB16,
                "wiping extents are not free"
            );
            assert_eq!(engine.wipe_backlog().unwrap(), MIB16);
            assert!(
                engine.list().unwrap().iter().all(|v| v.id != a.id),
                "gone for CSI at once"
            );
            // As after a crash before the wipe: a new engine finds the work and does it.
            let restarted = NodeEngine::new(host(), config());
            assert_eq!(restarted.wipe_pending().unwrap(), 1);
            assert_eq!(restarted.wipe_backlog().unwrap(), 0);
        }
        assert_eq!(engine.capacity(Some(class)).unwrap(), free);
        let b = engine
            .create(&format!("tenant-b-{class}"), Some(class), MIB16, 0)
            .unwrap();
        assert_eq!(
            ranges(&b),
            a_ranges,
            "the next volume lands on the same extents"
        );
        let read = read_dev(&dev(&b), MIB16 as usize);
        if wiped {
            assert!(
                read.iter().all(|&x| x == 0),
                "the next tenant read old data"
            );
        } else {
            assert_eq!(
                &read[4096..],
                &pattern[4096..],
                "without wiping the old data stays readable"
            );
        }
        assert!(engine.delete(&b.id).unwrap());
    }
    engine.wipe_pending().unwrap();
    l.assert_vgck_clean("wipevg");
}

/// Deletes that arrive together are retired together: a dozen threads
/// delete a dozen volumes (one of them twice, as a retried DeleteVolume
/// would), every call succeeds, each volume is gone for CSI and held by a
/// wiping LV lvm2 sees, and one wiper pass frees them all, zeroed.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn concurrent_deletes_retire_together_and_each_is_wiped() {
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::NodeEngine;
    let l = Loops::with_dm(2, 256);
    l.ferro_ok(&["vgcreate", "-s", "4m", "manyvg", l.dev(0)]);
    l.ferro_ok(&["vgcreate", "-s", "4m", "keepvg", l.dev(1)]);
    let engine = NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
        NodeConfig::parse(
            "device-classes:\n  - {name: zero, volume-group: manyvg, default: true, spare-gb: 0}\n  - {name: none, volume-group: keepvg, spare-gb: 0, wipe: none}",
        )
        .unwrap(),
    );
    const MIB8: u64 = 8 << 20;
    const N: usize = 12;
    let free = engine.capacity(None).unwrap();
    let volumes: Vec<_> = (0..N)
        .map(|i| engine.create(&format!("many-{i}"), None, MIB8, 0).unwrap())
        .collect();
    for v in &volumes {
        write_dev(
            &format!(
                "/dev/mapper/{}",
                ferrolvm::lvm::activate::dm_name(&v.vg, &v.lv, None)
            ),
            &pattern(0x5a),
        );
    }
    let results: Vec<_> = std::thread::scope(|scope| {
        let calls: Vec<_> = volumes
            .iter()
            .chain(std::iter::once(&volumes[0]))
            .map(|v| scope.spawn(|| engine.delete(&v.id)))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for r in &results[..N] {
        assert!(matches!(r, Ok(true)), "a delete failed: {r:?}");
    }
    assert!(
        results[N].is_ok(),
        "the repeated delete failed: {:?}",
        results[N]
    );
    assert!(engine.list().unwrap().is_empty(), "volumes left for CSI");
    assert_eq!(engine.wipe_backlog().unwrap(), N as u64 * MIB8);
    let tags = l.lvm_ok(&["lvs", "--noheadings", "-o", "lv_tags", "manyvg"]);
    assert_eq!(
        tags.lines()
            .filter(|t| t.trim() == "ferrolvm.io/wiping=zero")
            .count(),
        N,
        "lvm2 sees {tags}"
    );
    l.assert_vgck_clean("manyvg");
    assert_eq!(engine.wipe_pending().unwrap(), N);
    assert_eq!(engine.wipe_backlog().unwrap(), 0);
    assert_eq!(engine.capacity(None).unwrap(), free);
    assert_eq!(
        l.lvm_ok(&["lvs", "--noheadings", "-o", "lv_name", "manyvg"])
            .trim(),
        "",
        "wiped LVs left"
    );
    let reused = engine.create("after", None, N as u64 * MIB8, 0).unwrap();
    let read = read_dev(
        &format!(
            "/dev/mapper/{}",
            ferrolvm::lvm::activate::dm_name(&reused.vg, &reused.lv, None)
        ),
        (N as u64 * MIB8) as usize,
    );
    assert!(read.iter().all(|&x| x == 0), "a freed extent kept old data");
    l.assert_vgck_clean("manyvg");
    // Without a wipe the delete removes the LV at once, under the VG's
    // commit lock; repeats that queued behind it find it gone and succeed.
    let kept = engine.create("kept", Some("none"), MIB8, 0).unwrap();
    let repeats: Vec<_> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| engine.delete(&kept.id)))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for r in &repeats {
        assert!(r.is_ok(), "a repeated delete without wipe failed: {r:?}");
    }
    assert_eq!(
        l.lvm_ok(&["lvs", "--noheadings", "-o", "lv_name", "keepvg"])
            .trim(),
        "",
        "the unwiped LV is left"
    );
    l.assert_vgck_clean("keepvg");
}

/// The node engine's edges: a size limit is checked before anything is
/// made (thick, thin, clone); growth honours the class's room (spare,
/// overprovisioning) and the limit; concurrent snapshots or clones with one
/// name make one object.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn engine_edges_limits_room_and_names() {
    use ferrolvm::node::config::NodeConfig;
    use ferrolvm::node::{NodeEngine, Source, VolumeError};
    use std::sync::Arc;
    let l = Loops::with_dm(1, 512);
    vg_with_pool(&l, "edgevg", "128m");
    let config = NodeConfig::parse(
        "device-classes:\n  - {name: thick, volume-group: edgevg, default: true, spare-gb: 0}\n  - {name: thin, volume-group: edgevg, type: thin, thin-pool: {name: pool, overprovision-ratio: 2.0}}",
    )
    .unwrap();
    let engine = Arc::new(NodeEngine::new(
        ferrolvm::lvm::host::Host::load(Some(l.devs.clone())),
        config,
    ));
    const MIB: u64 = 1 << 20;
    let lvs = || l.lv_names(false).len();
    let before = lvs();
    // 5 MiB rounds up to two 4 MiB extents: over a 5 MiB limit, refused before anything is made.
    for class in ["thick", "thin"] {
        let r = engine.create(&format!("lim-{class}"), Some(class), 5 * MIB, 5 * MIB);
        assert!(
            matches!(r, Err(VolumeError::OutOfRange(_))),
            "{class}: {r:?}"
        );
    }
    assert_eq!(lvs(), before, "nothing was created");

    let v = engine.create("grow", None, 8 * MIB, 0).unwrap();
    assert!(matches!(
        engine.expand(&v.id, 2 << 30, 0),
        Err(VolumeError::NoSpace { .. })
    ));
    assert!(matches!(
        engine.expand(&v.id, 16 * MIB, 12 * MIB),
        Err(VolumeError::OutOfRange(_))
    ));
    assert_eq!(engine.expand(&v.id, 16 * MIB, 16 * MIB).unwrap(), 16 * MIB);
    let t = engine.create("thin-a", Some("thin"), 64 * MIB, 0).unwrap();
    // The pool is 128 MiB at ratio 2: 256 MiB of thin volumes in all.
    assert!(matches!(
        engine.expand(&t.id, 512 * MIB, 0),
        Err(VolumeError::NoSpace { .. })
    ));
    let r = engine.create_from(
        "clone-lim",
        Some("thin"),
        0,
        32 * MIB,
        &Source::Volume(t.id.clone()),
    );
    assert!(
        matches!(r, Err(VolumeError::OutOfRange(_))),
        "a clone starts at its source's size: {r:?}"
    );

    let spawn_all = |f: Arc<dyn Fn() -> String + Send + Sync>| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || f())
            })
            .collect();
        let ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "one object for one name: {ids:?}"
        );
    };
    let (e, id) = (engine.clone(), t.id.clone());
    spawn_all(Arc::new(move || {
        e.create_snapshot("one-snap", &id).unwrap().id
    }));
    assert_eq!(
        engine
            .snapshots()
            .unwrap()
            .iter()
            .filter(|s| s.name == "one-snap")
            .count(),
        1
    );
    let (e, id) = (engine.clone(), t.id.clone());
    spawn_all(Arc::new(move || {
        e.create_from(
            "one-clone",
            Some("thin"),
            64 * MIB,
            0,
            &Source::Volume(id.clone()),
        )
        .unwrap()
        .id
    }));
    assert_eq!(
        engine
            .list()
            .unwrap()
            .iter()
            .filter(|v| v.name == "one-clone")
            .count(),
        1
    );
    l.assert_vgck_clean("edgevg");
}

/// A thin `delete` the kernel refuses (here EBUSY: another device maps the
/// same thin id) is an error, not "done": the message stays queued, and no
/// later create may take that device id while its blocks are still there —
/// else the next tenant would be handed the old tenant's data. Once the
/// obstacle is gone, the next use of the pool finishes the delete.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn a_refused_thin_delete_keeps_its_device_id_out_of_use() {
    let l = Loops::with_dm(1, 512);
    vg_with_pool(&l, "tdvg", "64m");
    // "keep" stays active, so the pool does too.
    l.ferro_ok(&["lvcreate", "-T", "tdvg/pool", "-V", "16m", "-n", "keep"]);
    l.ferro_ok(&["lvcreate", "-T", "tdvg/pool", "-V", "16m", "-n", "old"]);
    let secret = pattern(7);
    write_dev("/dev/tdvg/old", &secret);
    let thin_id = l
        .lvm_ok(&["lvs", "--noheadings", "-o", "thin_id", "tdvg/old"])
        .trim()
        .to_string();
    l.ferro_ok(&["lvchange", "-an", "tdvg/old"]);
    // Another mapping of the same thin device keeps it open in the pool.
    let tpool = sh(
        "dmsetup",
        &[
            "info",
            "-c",
            "--noheadings",
            "-o",
            "major,minor",
            "tdvg-pool-tpool",
        ],
    );
    let table = format!("0 32768 thin {} {thin_id}", tpool.trim());
    sh("dmsetup", &["create", "holder", "--table", &table]);
    let out = l.ferro(&["lvremove", "tdvg/old"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the refused delete was taken as done"
    );
    assert!(
        err.contains("delete") && err.to_lowercase().contains("busy"),
        "the error names the refused message: {err}"
    );
    // Until the delete is applied, no new thin volume can be made in the pool.
    let out = l.ferro(&["lvcreate", "-T", "tdvg/pool", "-V", "16m", "-n", "new"]);
    assert!(
        !out.status.success(),
        "a create went ahead with a delete still pending"
    );
    sh("dmsetup", &["remove", "holder"]);
    l.ferro_ok(&["lvcreate", "-T", "tdvg/pool", "-V", "16m", "-n", "new"]);
    let names = l.lv_names(false);
    assert!(
        !names.contains(&"old".to_string()),
        "old is gone: {names:?}"
    );
    assert_ne!(
        read_dev("/dev/tdvg/new", secret.len()),
        secret,
        "the new volume shows the old one's data"
    );
    assert!(read_dev("/dev/tdvg/new", 1 << 20).iter().all(|&b| b == 0));
    l.ferro_ok(&["vgchange", "-an", "tdvg"]);
    thin_check(&l, "tdvg", "pool");
}

/// A panic inside a create batch — with the VG's lvm2 lock held and every
/// queued job taken — answers the caller with an error, releases the lock,
/// and leaves the VG's queue working: the next create succeeds at once,
/// and lvm2 can take the lock.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn a_panic_in_a_create_batch_wedges_nothing() {
    use std::sync::Arc;
    let l = Loops::with_dm(1, 256);
    let engine = Arc::new(thick_engine(&l, "pnvg"));
    std::env::set_var("FERROLVM_FAILPOINT", "create-batch:panic");
    let e = engine.clone();
    let crashed = std::thread::spawn(move || e.create("doomed", None, 8 << 20, 0)).join();
    std::env::remove_var("FERROLVM_FAILPOINT");
    assert!(
        crashed.is_err() || crashed.as_ref().is_ok_and(|r| r.is_err()),
        "the failpoint did not fire: {crashed:?}"
    );
    // lvm2 gets the VG lock (it would hang on a leaked one).
    l.lvm_ok(&["lvcreate", "-an", "-Zn", "-n", "by-lvm", "-L", "4m", "pnvg"]);
    let v = engine
        .create("after", None, 8 << 20, 0)
        .expect("the queue works after a panic");
    assert!(engine.list().unwrap().iter().any(|x| x.id == v.id));
    assert!(
        !l.lv_names(false).iter().any(|n| n.contains("doomed")),
        "nothing was made by the panicked batch"
    );
}

/// A device-mapper driver that is there but fails (here the control node
/// answers no dm ioctl) is an error for every change that could need a live
/// table, never a silent metadata-only change; `ferrolvm node` refuses to
/// start. Only lvm2's `--driverloaded n` asks for metadata-only.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn a_failing_device_mapper_is_an_error_not_metadata_only() {
    let l = Loops::with_dm(1, 256);
    l.ferro_ok(&["vgcreate", "-s", "4m", "fdvg", l.dev(0)]);
    l.ferro_ok(&["lvcreate", "-n", "live", "-L", "8m", "fdvg"]);
    let before = l.lv_names(false);
    // /dev/null over the control node: it opens, but every ioctl fails.
    sh("mount", &["--bind", "/dev/null", "/dev/mapper/control"]);
    let results: Vec<(Vec<&str>, std::process::Output)> = [
        vec!["lvremove", "fdvg/live"],
        vec!["lvextend", "-L", "+4m", "fdvg/live"],
        vec!["lvcreate", "-n", "new", "-L", "4m", "fdvg"],
    ]
    .into_iter()
    .map(|args| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
            .arg(args[0])
            .args(["--devices", &l.list()])
            .args(&args[1..])
            .output()
            .unwrap();
        (args, out)
    })
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lvmd.yaml");
    std::fs::write(
        &cfg,
        "device-classes:\n  - {name: thick, volume-group: fdvg, default: true}\n",
    )
    .unwrap();
    // A node that starts would serve forever: give it 20 s, then kill it.
    let mut node = Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
        .args(["node", "--config"])
        .arg(&cfg)
        .args(["--node-name", "n1", "--csi-endpoint"])
        .arg(format!("unix://{}/csi.sock", dir.path().display()))
        .args(["--devices", &l.list()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while node.try_wait().unwrap().is_none() && started.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = node.kill();
    let node = node.wait_with_output().unwrap();
    sh("umount", &["/dev/mapper/control"]);
    for (args, out) in &results {
        assert!(
            !out.status.success(),
            "{args:?} went ahead without device-mapper"
        );
    }
    assert!(!node.status.success(), "ferrolvm node started without dm");
    assert!(
        String::from_utf8_lossy(&node.stderr).contains("device-mapper"),
        "{}",
        String::from_utf8_lossy(&node.stderr)
    );
    assert_eq!(l.lv_names(false), before, "the VG changed");
    assert!(dm_exists("fdvg-live"), "the live table is still there");
    l.assert_vgck_clean("fdvg");
}

/// SIGTERM: in-flight calls get `--shutdown-grace`, not forever. A create
/// waits on an lvm2 lock that this test holds (the node would wait 30 s);
/// the node exits within its 2 s grace, and once the lock is free the VG
/// holds either the whole volume or none of it.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn sigterm_ends_the_node_within_its_grace_period() {
    use std::time::{Duration, Instant};
    let l = Loops::with_dm(1, 256);
    l.ferro_ok(&["vgcreate", "-s", "4m", "sgvg", l.dev(0)]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lvmd.yaml");
    std::fs::write(
        &cfg,
        "device-classes:\n  - {name: thick, volume-group: sgvg, default: true, spare-gb: 0}\n",
    )
    .unwrap();
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let mut node = Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
        .args(["node", "--standalone", "--shutdown-grace", "2", "--config"])
        .arg(&cfg)
        .args(["--node-name", "n1", "--csi-endpoint", &endpoint])
        .args(["--devices", &l.list()])
        .spawn()
        .unwrap();
    let sock = dir.path().join("csi.sock");
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no socket");
        std::thread::sleep(Duration::from_millis(100));
    }
    let host = ferrolvm::lvm::host::Host::load(Some(l.devs.clone()));
    let lock = ferrolvm::lvm::lock::LvmLock::vg(
        &host.lock_dir,
        "sgvg",
        ferrolvm::lvm::lock::Mode::Exclusive,
        None,
    )
    .unwrap();
    let mut client = Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
        .args(["csi", "--csi-endpoint", &endpoint, "create-volume", "held"])
        .args(["--bytes", "8388608"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on the child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(node.id() as i32, libc::SIGTERM) }, 0);
    let term = Instant::now();
    let status = loop {
        if let Some(s) = node.try_wait().unwrap() {
            break s;
        }
        if term.elapsed() > Duration::from_secs(15) {
            let _ = node.kill();
            panic!("the node outlived its 2 s grace period by far (the lock wait is 30 s)");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = term.elapsed();
    drop(lock);
    let _ = client.wait();
    assert!(status.code().is_some(), "the node was killed: {status:?}");
    assert!(
        took >= Duration::from_secs(2),
        "exited before its grace: {took:?}"
    );
    let names = l.lv_names(false);
    assert!(
        names.iter().all(|n| !n.contains("held")),
        "a half-made volume: {names:?}"
    );
    l.assert_vgck_clean("sgvg");
}

/// LUKS and a partition table are foreign signatures like swap: publishing
/// such a volume as a filesystem is refused and its bytes stay untouched.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn luks_and_partition_tables_are_never_formatted() {
    use ferrolvm::node::mounts::{self, Publish};
    use ferrolvm::node::{target, VolumeError};
    let l = Loops::with_dm(1, 256);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kubelet");
    std::fs::create_dir_all(root.join("pods")).unwrap();
    let engine = thick_engine(&l, "sigvg").with_publish_roots(vec![root.clone()]);
    // A LUKS1 header: magic, version 1, cipher, mode, hash, uuid.
    let mut luks = vec![0u8; 4096];
    luks[..6].copy_from_slice(b"LUKS\xba\xbe");
    luks[6..8].copy_from_slice(&1u16.to_be_bytes());
    luks[8..11].copy_from_slice(b"aes");
    luks[40..51].copy_from_slice(b"xts-plain64");
    luks[72..78].copy_from_slice(b"sha256");
    luks[168..204].copy_from_slice(b"5a7e0f3c-1d2b-4c8a-9e6f-0b1c2d3e4f5a");
    // A DOS partition table: one Linux partition from sector 2048.
    let mut mbr = vec![0u8; 4096];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&8192u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    for (name, bytes, expect) in [
        ("luks", &luks, "crypto_LUKS"),
        ("dos", &mbr, "partition table"),
    ] {
        let v = engine
            .create(&format!("sig-{name}"), None, 8 << 20, 0)
            .unwrap();
        let dev = format!(
            "/dev/mapper/{}",
            ferrolvm::lvm::activate::dm_name(&v.vg, &v.lv, None)
        );
        write_dev(&dev, bytes);
        match mounts::probe(Path::new(&dev)).unwrap() {
            mounts::Signature::Other(s) => assert!(s.contains(expect), "{name}: {s}"),
            s => panic!("{name}: blkid saw {s:?}"),
        }
        for fs in ["ext4", "xfs"] {
            let t = target::check(
                &format!("{}/pods/{name}/volumes/{fs}", root.display()),
                &engine.publish_roots,
            )
            .unwrap();
            let r = mounts::publish(
                &engine,
                &v.id,
                &t,
                &Publish {
                    block: false,
                    fs_type: fs.into(),
                    mount_flags: vec![],
                    readonly: false,
                },
            );
            assert!(
                matches!(r, Err(VolumeError::Invalid(_))),
                "{name} as {fs}: {r:?}"
            );
        }
        assert_eq!(
            &read_dev(&dev, bytes.len()),
            bytes,
            "{name} was written over"
        );
    }
}

/// `ferrolvm lvmd` answers TopoLVM's lvmd protocol: volumes by name in a
/// thick and a thin class, lvm2's own `lv_attr` for them, capacity that
/// moves and a Watch stream that says so, snapshots and clones, and lvmd's
/// codes for what it refuses.
#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn lvmd_protocol_over_the_engine_agrees_with_lvm2() {
    use ferrolvm_proto::lvmd::lv_service_client::LvServiceClient;
    use ferrolvm_proto::lvmd::vg_service_client::VgServiceClient;
    use ferrolvm_proto::lvmd::*;
    use std::time::{Duration, Instant};
    let l = Loops::with_dm(1, 512);
    vg_with_pool(&l, "lmvg", "128m");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lvmd.yaml");
    std::fs::write(
        &cfg,
        "device-classes:\n  - {name: thick, volume-group: lmvg, default: true, spare-gb: 0}\n  - {name: thin, volume-group: lmvg, type: thin, thin-pool: {name: pool, overprovision-ratio: 4}}\n",
    )
    .unwrap();
    let sock = dir.path().join("lvmd.sock");
    let mut lvmd = Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
        .args(["lvmd", "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&sock)
        .args(["--devices", &l.list()])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no socket");
        assert!(lvmd.try_wait().unwrap().is_none(), "ferrolvm lvmd exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt
        .block_on(ferrolvm::csi::unix_channel(sock.clone()))
        .unwrap();
    let mut lv = LvServiceClient::new(ch.clone());
    let mut vg = VgServiceClient::new(ch);
    let free = |vg: &mut VgServiceClient<_>, class: &str| {
        rt.block_on(vg.get_free_bytes(GetFreeBytesRequest {
            device_class: class.into(),
        }))
        .unwrap()
        .into_inner()
        .free_bytes
    };
    let mut watch = rt.block_on(vg.watch(Empty {})).unwrap().into_inner();
    let first = rt.block_on(watch.message()).unwrap().unwrap();
    let before = free(&mut vg, "");
    assert_eq!(first.free_bytes, before, "Watch: {first:?}");
    assert_eq!(first.items.len(), 2, "{first:?}");
    let mib = 1 << 20;
    let create = |lv: &mut LvServiceClient<_>, name: &str, class: &str| {
        rt.block_on(lv.create_lv(CreateLvRequest {
            name: name.into(),
            device_class: class.into(),
            size_bytes: 8 * mib,
            ..Default::default()
        }))
        .map(|r| r.into_inner().volume.unwrap())
    };
    let thick = create(&mut lv, "vol-a", "").unwrap();
    assert_eq!(thick.name, "vol-a");
    assert_eq!(thick.size_bytes, 8 * mib);
    assert_eq!(thick.path, "/dev/lmvg/vol-a");
    assert!(thick.dev_major > 0, "{thick:?}");
    assert_eq!(thick.attr, lv_attr(&l, "lmvg/vol-a"), "lvm2 reads the same");
    assert_eq!(free(&mut vg, "thick"), before - 8 * mib as u64);
    // The watcher sees the commit and Watch sends the new capacity.
    let moved = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let m = watch.message().await.unwrap().unwrap();
                    if m.free_bytes != before {
                        return m;
                    }
                }
            })
            .await
        })
        .expect("Watch sent no new capacity");
    assert_eq!(moved.free_bytes, before - 8 * mib as u64);
    let thin = create(&mut lv, "thin-a", "thin").unwrap();
    let lvm2 = lv_attr(&l, "lmvg/thin-a");
    // lvm2 also shows the pool's zeroing (`z`), which ferrolvm leaves out.
    let mut ours = thin.attr.clone();
    ours.replace_range(7..8, &lvm2[7..8]);
    assert_eq!(ours, lvm2, "thin attr {}", thin.attr);
    let listed = rt
        .block_on(vg.get_lv_list(GetLvListRequest {
            device_class: "thick".into(),
        }))
        .unwrap()
        .into_inner()
        .volumes;
    let names: Vec<&str> = listed.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["vol-a"],
        "the thick class lists its own volume only"
    );
    let grown = rt
        .block_on(lv.resize_lv(ResizeLvRequest {
            name: "vol-a".into(),
            device_class: "thick".into(),
            size_bytes: 16 * mib,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(grown.size_bytes, 16 * mib);
    let size = l.lvm_ok(&[
        "lvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "lv_size",
        "lmvg/vol-a",
    ]);
    assert_eq!(size.trim(), (16 * mib).to_string());
    let snapshot = |lv: &mut LvServiceClient<_>, name: &str, source: &str, access: &str| {
        rt.block_on(lv.create_lv_snapshot(CreateLvSnapshotRequest {
            name: name.into(),
            device_class: "thin".into(),
            source_volume: source.into(),
            access_type: access.into(),
            size_bytes: 8 * mib,
            ..Default::default()
        }))
        .unwrap_or_else(|e| panic!("CreateLVSnapshot {name}: {e}"))
        .into_inner()
        .snapshot
        .unwrap()
    };
    assert_eq!(snapshot(&mut lv, "snap-a", "thin-a", "ro").name, "snap-a");
    let clone = snapshot(&mut lv, "clone-a", "snap-a", "rw");
    assert!(clone.attr.starts_with("Vwi-a"), "{clone:?}");
    // What lvmd refuses, with lvmd's codes.
    let code = |r: Result<LogicalVolume, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(create(&mut lv, "x", "hdd")), tonic::Code::NotFound);
    assert_eq!(code(create(&mut lv, "", "")), tonic::Code::InvalidArgument);
    let tagged = rt.block_on(lv.create_lv(CreateLvRequest {
        name: "tagged".into(),
        tags: vec!["t".into()],
        size_bytes: 8 * mib,
        ..Default::default()
    }));
    assert_eq!(tagged.unwrap_err().code(), tonic::Code::InvalidArgument);
    let huge = rt.block_on(lv.create_lv(CreateLvRequest {
        name: "huge".into(),
        size_bytes: 4096 * mib,
        ..Default::default()
    }));
    assert_eq!(huge.unwrap_err().code(), tonic::Code::ResourceExhausted);
    for name in ["vol-a", "clone-a", "snap-a", "thin-a"] {
        rt.block_on(lv.remove_lv(RemoveLvRequest {
            name: name.into(),
            device_class: if name == "vol-a" { "thick" } else { "thin" }.into(),
        }))
        .unwrap_or_else(|e| panic!("RemoveLV {name}: {e}"));
    }
    let gone = rt.block_on(lv.remove_lv(RemoveLvRequest {
        name: "vol-a".into(),
        device_class: "thick".into(),
    }));
    assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
    let left = l.lv_names(false);
    for name in ["vol-a", "thin-a", "clone-a"] {
        assert!(!left.iter().any(|n| n == name), "{name} still in {left:?}");
    }
    let _ = lvmd.kill();
    let _ = lvmd.wait();
    l.lvm_ok(&["vgchange", "-an", "lmvg"]);
    thin_check(&l, "lmvg", "pool");
    l.assert_vgck_clean("lmvg");
}
