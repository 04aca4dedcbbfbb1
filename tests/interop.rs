//! ferrolvm against the real lvm2 on loop devices, in both directions.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// lvm2 builds a VG with everything the format allows us to meet: several
/// PVs, two mdas per PV, an ignored mda, striped and multi-segment LVs,
/// tags, names with `-`, `.`, `+`, and a circular buffer that wrapped.
#[test]
fn lvm2_writes_ferrolvm_reads() {
    let l = Loops::new(3, 64);
    l.lvm_ok(&[
        "pvcreate",
        "--pvmetadatacopies",
        "2",
        "--dataalignment",
        "64k",
        "--metadatasize",
        "32k",
        l.dev(0),
        l.dev(1),
        l.dev(2),
    ]);
    l.lvm_ok(&[
        "vgcreate",
        "-s",
        "1m",
        "i-vg.a+b",
        l.dev(0),
        l.dev(1),
        l.dev(2),
    ]);
    l.lvm_ok(&["pvchange", "--metadataignore", "y", l.dev(2)]);
    l.lvm_ok(&[
        "lvcreate",
        "-an",
        "-Zn",
        "-n",
        "lin-1.x+y",
        "-L",
        "3m",
        "--addtag",
        "t1",
        "--addtag",
        "a/b=c",
        "i-vg.a+b",
    ]);
    l.lvm_ok(&[
        "lvcreate", "-an", "-Zn", "-n", "striped", "-i", "2", "-I", "64k", "-L", "8m", "i-vg.a+b",
    ]);
    l.lvm_ok(&["lvextend", "-L", "+5m", "i-vg.a+b/lin-1.x+y", l.dev(2)]);
    l.assert_same_reports();
    // Churn until some mda's circular buffer has wrapped, comparing all along.
    let mut wrapped = false;
    for i in 0..60 {
        l.lvm_ok(&[
            "lvcreate",
            "-an",
            "-Zn",
            "-n",
            &format!("churn{i}"),
            "-L",
            "1m",
            "i-vg.a+b",
        ]);
        if i % 3 == 2 {
            l.lvm_ok(&["lvremove", "-y", &format!("i-vg.a+b/churn{}", i - 1)]);
        }
        wrapped |= l
            .devs
            .iter()
            .flat_map(|d| mda_headers(d))
            .any(|h| h.slots[0].offset + h.slots[0].size > h.size);
        if i % 10 == 0 {
            l.assert_same_reports();
        }
        if wrapped && i > 20 {
            break;
        }
    }
    assert!(
        wrapped,
        "the circular buffer never wrapped; the test did not test wrapping"
    );
    l.assert_same_reports();
    // And ferrolvm can write the VG lvm2 built, wrapped buffer and ignored mda included.
    let ignored_before = mda_headers(&l.devs[2]);
    assert!(ignored_before.iter().all(|h| h.ignored()));
    l.ferro_ok(&[
        "lvcreate",
        "-an",
        "-n",
        "from-ferro",
        "-L",
        "2m",
        "i-vg.a+b",
    ]);
    l.assert_vgck_clean("i-vg.a+b");
    l.assert_same_reports();
    assert_eq!(
        mda_headers(&l.devs[2]),
        ignored_before,
        "ignored mdas must not be written"
    );
}

/// ferrolvm builds and changes a VG; lvm2 validates and reports the same.
#[test]
fn ferrolvm_writes_lvm2_reads() {
    let l = Loops::new(3, 64);
    l.ferro_ok(&["pvcreate", "--pvmetadatacopies", "2", l.dev(0), l.dev(1)]);
    l.ferro_ok(&["vgcreate", "f-vg.1", l.dev(0), l.dev(1)]);
    l.assert_vgck_clean("f-vg.1");
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "lvcreate", "-an", "-n", "a-b.c+d", "-L", "8m", "--addtag", "x=y", "--addtag", "t2",
            "f-vg.1",
        ],
        vec![
            "lvcreate", "-an", "-n", "st", "-i", "2", "-I", "64k", "-L", "16m", "f-vg.1",
        ],
        vec!["lvextend", "-l", "+4", "f-vg.1/st"],
        vec!["lvcreate", "-an", "-n", "fill", "-l", "50%FREE", "f-vg.1"],
        vec!["lvextend", "-L", "+40m", "f-vg.1/a-b.c+d"],
        vec!["lvresize", "-L", "-4m", "f-vg.1/a-b.c+d"],
        vec!["lvrename", "f-vg.1", "fill", "filled"],
        vec!["vgextend", "f-vg.1", l.dev(2)],
        vec!["lvextend", "-l", "+10", "f-vg.1/a-b.c+d"],
        vec!["lvremove", "f-vg.1/filled"],
    ];
    for s in &steps {
        l.ferro_ok(s);
        l.assert_vgck_clean("f-vg.1");
        l.assert_same_reports();
    }
    // lvm2 changes it afterwards without complaint.
    l.lvm_ok(&[
        "lvcreate", "-an", "-Zn", "-n", "by-lvm", "-L", "4m", "f-vg.1",
    ]);
    l.lvm_ok(&["lvremove", "-y", "f-vg.1/a-b.c+d"]);
    l.assert_same_reports();
    l.ferro_ok(&["vgremove", "-f", "f-vg.1"]);
    let out = l.lvm(&["vgs", "f-vg.1"]);
    assert!(!out.status.success(), "lvm2 still sees the removed VG");
    let pvs = l.lvm_ok(&["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"]);
    assert_eq!(
        pvs.matches("\"vg_name\":\"\"").count(),
        3,
        "all PVs are orphans again: {pvs}"
    );
}

/// 200 operations, alternating between the two tools on one VG.
#[test]
fn two_hundred_alternating_operations() {
    let l = Loops::new(2, 128);
    l.lvm_ok(&["vgcreate", "-s", "1m", "alt-vg", l.dev(0), l.dev(1)]);
    let mut live: Vec<String> = Vec::new();
    for i in 0..200 {
        let by_ferro = i % 2 == 0;
        let run = |args: &[&str]| {
            if by_ferro {
                l.ferro_ok(args)
            } else {
                l.lvm_ok(args)
            }
        };
        match i % 5 {
            0..=2 => {
                let name = format!("v{i}");
                if by_ferro {
                    run(&["lvcreate", "-an", "-n", &name, "-L", "1m", "alt-vg"]);
                } else {
                    run(&["lvcreate", "-an", "-Zn", "-n", &name, "-L", "1m", "alt-vg"]);
                }
                live.push(name);
            }
            3 => {
                let name = live[i % live.len()].clone();
                run(&["lvextend", "-L", "+1m", &format!("alt-vg/{name}")]);
            }
            _ => {
                let name = live.remove(i % live.len());
                if by_ferro {
                    run(&["lvremove", &format!("alt-vg/{name}")]);
                } else {
                    run(&["lvremove", "-y", &format!("alt-vg/{name}")]);
                }
            }
        }
        if i % 25 == 24 {
            l.assert_same_reports();
        }
    }
    live.sort();
    assert_eq!(l.lv_names(false), live);
    assert_eq!(
        l.seqno("alt-vg"),
        201,
        "one commit per operation, none lost"
    );
    l.assert_vgck_clean("alt-vg");
}

/// Both tools hammer one VG at the same time for 30 s; the locks must keep
/// every commit whole: no lost or duplicated LV, seqno counting every commit.
#[test]
fn concurrent_tools_for_thirty_seconds() {
    let l = Arc::new(Loops::new(2, 256));
    l.lvm_ok(&["vgcreate", "-s", "1m", "conc-vg", l.dev(0), l.dev(1)]);
    let start_seqno = l.seqno("conc-vg");
    let stop = Arc::new(AtomicBool::new(false));
    let worker = |ferro: bool| {
        let l = l.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut created = Vec::new();
            let mut commits = 0u64;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("{}{i}", if ferro { "f" } else { "l" });
                let args = ["lvcreate", "-an", "-n", &name, "-L", "1m", "conc-vg"];
                if ferro {
                    l.ferro_ok(&args)
                } else {
                    l.lvm_ok(&["lvcreate", "-an", "-Zn", "-n", &name, "-L", "1m", "conc-vg"])
                };
                commits += 1;
                created.push(name);
                if created.len() > 10 {
                    let victim = created.remove(0);
                    let path = format!("conc-vg/{victim}");
                    if ferro {
                        l.ferro_ok(&["lvremove", &path])
                    } else {
                        l.lvm_ok(&["lvremove", "-y", &path])
                    };
                    commits += 1;
                }
                i += 1;
            }
            (created, commits)
        })
    };
    let f = worker(true);
    let g = worker(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut a, ca) = f.join().unwrap();
    let (b, cb) = g.join().unwrap();
    a.extend(b);
    a.sort();
    assert!(ca > 5 && cb > 5, "both tools made progress ({ca}, {cb})");
    assert_eq!(l.lv_names(false), a, "LVs lost or duplicated");
    assert_eq!(l.lv_names(true), a);
    assert_eq!(
        l.seqno("conc-vg"),
        start_seqno + ca + cb,
        "every commit counted once"
    );
    l.assert_vgck_clean("conc-vg");
}

/// A metadata area too small for the next text: a clear error, VG unchanged.
#[test]
fn full_metadata_area_is_refused_cleanly() {
    let l = Loops::new(1, 64);
    l.ferro_ok(&[
        "pvcreate",
        "--dataalignment",
        "64k",
        "--metadatasize",
        "32k",
        l.dev(0),
    ]);
    l.ferro_ok(&["vgcreate", "-s", "64k", "full-vg", l.dev(0)]);
    let mut n = 0;
    let err = loop {
        let out = l.ferro(&[
            "lvcreate",
            "-an",
            "-n",
            &format!("lv_with_a_long_name_{n:04}"),
            "-l",
            "1",
            "--addtag",
            "some-tag-to-grow-metadata",
            "full-vg",
        ]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        n += 1;
        assert!(n < 2000, "metadata area never filled up");
    };
    assert!(err.contains("metadata area full"), "unclear error: {err}");
    let before = l.seqno("full-vg");
    assert_eq!(before as usize, n + 1);
    assert_eq!(l.lv_names(false).len(), n);
    l.assert_vgck_clean("full-vg");
    l.assert_same_reports();
}

/// With lvm.conf's devices file enabled, both tools see only listed devices,
/// and a PV ferrolvm creates is added to the file so lvm2 sees it too.
#[test]
fn devices_file_is_honoured_both_ways() {
    let l = Loops::new(3, 64);
    let sys = tempfile::tempdir().unwrap();
    std::fs::write(
        sys.path().join("lvm.conf"),
        "devices {\nuse_devicesfile = 1\n}\n",
    )
    .unwrap();
    std::fs::create_dir(sys.path().join("devices")).unwrap();
    let file = sys.path().join("devices/system.devices");
    std::fs::write(&file, format!("# LVM uses devices listed in this file.\nVERSION=1.1.1\nIDTYPE=devname IDNAME={0} DEVNAME={0} PVID=.\n", l.dev(0))).unwrap();
    let tool = |lvm: bool, args: &[&str]| {
        let mut c = if lvm {
            std::process::Command::new("lvm")
        } else {
            std::process::Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
        };
        c.args(args)
            .env("LVM_SYSTEM_DIR", sys.path())
            .env("LVM_SUPPRESS_FD_WARNINGS", "1");
        if lvm {
            c.args(["--driverloaded", "n"]);
        }
        ok(
            c.output().unwrap(),
            if lvm { "lvm" } else { "ferrolvm" },
            args,
        )
    };
    tool(true, &["pvcreate", l.dev(0)]);
    tool(false, &["pvcreate", l.dev(1)]);
    let listed = std::fs::read_to_string(&file).unwrap();
    assert!(
        listed.contains(&format!("DEVNAME={} PVID=", l.dev(1))),
        "ferrolvm did not add its PV: {listed}"
    );
    assert!(listed.contains("VERSION=1.1."), "{listed}");
    let pvs = |lvm: bool| {
        let out = tool(lvm, &["pvs", "--reportformat", "json", "-o", "pv_name"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut names: Vec<String> = v["report"][0]["pv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["pv_name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let want = vec![l.dev(0).to_string(), l.dev(1).to_string()];
    assert_eq!(pvs(true), want, "lvm2 sees exactly the listed PVs");
    assert_eq!(pvs(false), want, "ferrolvm sees exactly the listed PVs");
    tool(false, &["vgcreate", "df-vg", l.dev(0), l.dev(1)]);
    tool(false, &["lvcreate", "-an", "-n", "x", "-L", "8m", "df-vg"]);
    let vgs = tool(
        true,
        &[
            "vgs",
            "--reportformat",
            "json",
            "-o",
            "pv_count,lv_count",
            "df-vg",
        ],
    );
    assert!(
        vgs.contains("\"pv_count\":\"2\"") && vgs.contains("\"lv_count\":\"1\""),
        "{vgs}"
    );
    tool(true, &["vgck", "df-vg"]);
}

/// The node's change watcher notices lvm2's and ferrolvm's commits within a
/// second, reading only mda headers while nothing changes.
#[test]
fn change_watcher_sees_lvm2_within_a_second() {
    let l = Loops::new(2, 64);
    l.lvm_ok(&["vgcreate", "watch-vg", l.dev(0), l.dev(1)]);
    let (tx, rx) = std::sync::mpsc::channel();
    let host = ferrolvm::lvm::host::Host::load(Some(l.devs.clone()));
    let _w = ferrolvm::node::watch::watch(
        host,
        vec!["watch-vg".into()],
        Duration::from_millis(100),
        move |vg, seqno| {
            let _ = tx.send((vg.to_string(), seqno));
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "no change yet, no event");
    let before = l.seqno("watch-vg");
    l.lvm_ok(&[
        "lvcreate", "-an", "-Zn", "-n", "by-lvm", "-L", "4m", "watch-vg",
    ]);
    let (vg, seqno) = rx
        .recv_timeout(Duration::from_secs(1))
        .expect("lvm2's change was not seen within a second");
    assert_eq!((vg.as_str(), seqno as u64), ("watch-vg", before + 1));
    l.ferro_ok(&["lvcreate", "-an", "-n", "by-ferro", "-L", "4m", "watch-vg"]);
    let (_, seqno) = rx
        .recv_timeout(Duration::from_secs(1))
        .expect("ferrolvm's change was not seen within a second");
    assert_eq!(seqno as u64, before + 2);
}

/// lvm.conf's `global_filter` and `filter` hide devices from ferrolvm as
/// they do from lvm2 (a full scan, no `--devices`); a pattern lvm2 could not
/// parse makes ferrolvm refuse to run, naming it, instead of scanning
/// everything.
#[test]
fn lvm_conf_filters_are_honoured() {
    let l = Loops::new(2, 64);
    l.ferro_ok(&["vgcreate", "filtvg0", l.dev(0)]);
    l.ferro_ok(&["vgcreate", "filtvg1", l.dev(1)]);
    let sys = tempfile::tempdir().unwrap();
    let run = |lvm: bool, conf: &str| {
        std::fs::write(sys.path().join("lvm.conf"), conf).unwrap();
        let mut c = if lvm {
            std::process::Command::new("lvm")
        } else {
            std::process::Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
        };
        c.args(["vgs", "--noheadings", "-o", "vg_name"])
            .env("LVM_SYSTEM_DIR", sys.path())
            .env("LVM_SUPPRESS_FD_WARNINGS", "1");
        if lvm {
            c.args(["--driverloaded", "n"]);
        }
        c.output().unwrap()
    };
    let names = |out: std::process::Output| -> Vec<String> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|n| n.starts_with("filtvg"))
            .map(String::from)
            .collect()
    };
    let reject1 = format!(
        "devices {{\nglobal_filter = [ \"r|^{}$|\" ]\n}}\n",
        l.dev(1)
    );
    assert_eq!(names(run(false, &reject1)), vec!["filtvg0"]);
    assert_eq!(names(run(true, &reject1)), vec!["filtvg0"], "lvm2 agrees");
    let accept1 = format!(
        "devices {{\nfilter = [ \"a|^{}$|\", \"r|.*|\" ]\n}}\n",
        l.dev(1)
    );
    assert_eq!(names(run(false, &accept1)), vec!["filtvg1"]);
    assert_eq!(names(run(true, &accept1)), vec!["filtvg1"], "lvm2 agrees");
    let out = run(false, "devices {\nfilter = [ \"x|bad|\" ]\n}\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("filter pattern") && err.contains("x|bad|"),
        "a bad filter must be refused by name: {err}"
    );
}

/// Without device-mapper (this host has none), ferrolvm changes metadata
/// only when asked with `--driverloaded n`, as lvm2; otherwise a change that
/// may have to touch a live device fails and names the flag, and nothing is
/// committed. `ferrolvm node` refuses to start at all.
#[test]
fn without_device_mapper_metadata_only_changes_need_asking() {
    assert!(
        !std::fs::read_to_string("/proc/misc")
            .unwrap()
            .contains("device-mapper"),
        "this test needs a host without device-mapper (the VM suite covers the other case)"
    );
    let l = Loops::new(1, 64);
    l.ferro_ok(&["vgcreate", "nodm", l.dev(0)]);
    l.ferro_ok(&["lvcreate", "-an", "-n", "a", "-L", "8m", "nodm"]);
    let ferro = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
            .arg(args[0])
            .args(["--devices", l.dev(0)])
            .args(&args[1..])
            .output()
            .unwrap()
    };
    let seqno = l.seqno("nodm");
    for args in [
        &["lvremove", "nodm/a"][..],
        &["lvextend", "-L", "+4m", "nodm/a"][..],
        &["vgremove", "-f", "nodm"][..],
        &["lvcreate", "-n", "b", "-L", "8m", "nodm"][..],
    ] {
        let out = ferro(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("device-mapper")
                && err.contains("--driverloaded n"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(l.seqno("nodm"), seqno, "nothing was committed");
    assert!(ferro(&["lvremove", "--driverloaded", "n", "nodm/a"])
        .status
        .success());
    assert_eq!(l.seqno("nodm"), seqno + 1);

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("node.yaml");
    std::fs::write(
        &conf,
        "device-classes:\n  - {name: a, volume-group: nodm, default: true}\n",
    )
    .unwrap();
    let sock = dir.path().join("csi.sock");
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_ferrolvm"))
        .args(["node", "--devices", l.dev(0), "--config"])
        .arg(&conf)
        .args(["--node-name", "n", "--csi-endpoint"])
        .arg(format!("unix://{}", sock.display()))
        .arg("--standalone")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = node.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = node.kill();
            panic!("ferrolvm node kept running without device-mapper");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut node.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success() && err.contains("needs device-mapper"),
        "{err}"
    );
    assert!(!sock.exists(), "no socket was served");
}

/// lvm2 builds a VG on 4Kn devices (4096-byte logical sectors, where direct
/// I/O of a lone 512-byte label or header is refused by the kernel), churns
/// it until a circular buffer wraps, and ferrolvm reads the same VG and
/// then writes it, lvm2 agreeing.
#[test]
fn four_k_native_lvm2_writes_ferrolvm_reads() {
    let l = Loops::with_sector_size(2, 64, 4096);
    for d in &l.devs {
        assert_eq!(logical_sector_size(d), 4096, "{} is not 4Kn", d.display());
    }
    l.lvm_ok(&[
        "pvcreate",
        "--pvmetadatacopies",
        "2",
        "--dataalignment",
        "64k",
        "--metadatasize",
        "32k",
        l.dev(0),
        l.dev(1),
    ]);
    l.lvm_ok(&["vgcreate", "-s", "1m", "k4", l.dev(0), l.dev(1)]);
    l.lvm_ok(&[
        "lvcreate", "-an", "-Zn", "-n", "st", "-i", "2", "-I", "64k", "-L", "8m", "k4",
    ]);
    l.assert_same_reports();
    let mut wrapped = false;
    for i in 0..60 {
        let name = format!("churn{i}");
        l.lvm_ok(&["lvcreate", "-an", "-Zn", "-n", &name, "-L", "1m", "k4"]);
        if i % 2 == 1 {
            l.lvm_ok(&["lvremove", "-y", &format!("k4/churn{}", i - 1)]);
        }
        wrapped |= l
            .devs
            .iter()
            .flat_map(|d| mda_headers(d))
            .any(|h| h.slots[0].offset + h.slots[0].size > h.size);
        if wrapped && i > 10 {
            break;
        }
    }
    assert!(wrapped, "the circular buffer never wrapped");
    l.assert_same_reports();
    // ferrolvm writes into the wrapped buffers of 4Kn devices: every label and
    // header write is a read-modify-write of a whole 4096-byte sector.
    l.ferro_ok(&["lvcreate", "-an", "-n", "ferro", "-L", "4m", "k4"]);
    l.ferro_ok(&["lvextend", "-L", "+4m", "k4/st"]);
    l.ferro_ok(&["lvremove", "k4/ferro"]);
    l.assert_vgck_clean("k4");
    l.assert_same_reports();
    l.lvm_ok(&["lvcreate", "-an", "-Zn", "-n", "after", "-L", "2m", "k4"]);
    l.assert_same_reports();
}

/// ferrolvm makes PVs and a VG on 4Kn devices and changes it; lvm2 validates
/// every step and reports the same; lvm2 then changes it and ferrolvm follows.
#[test]
fn four_k_native_ferrolvm_writes_lvm2_reads() {
    let l = Loops::with_sector_size(3, 64, 4096);
    l.ferro_ok(&["pvcreate", "--pvmetadatacopies", "2", l.dev(0), l.dev(1)]);
    l.ferro_ok(&["vgcreate", "k4f", l.dev(0), l.dev(1)]);
    l.assert_vgck_clean("k4f");
    l.assert_same_reports();
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "lvcreate", "-an", "-n", "a", "-L", "8m", "--addtag", "x=y", "k4f",
        ],
        vec![
            "lvcreate", "-an", "-n", "st", "-i", "2", "-I", "64k", "-L", "16m", "k4f",
        ],
        vec!["lvextend", "-L", "+12m", "k4f/a"],
        vec!["lvrename", "k4f", "a", "b"],
        vec!["vgextend", "k4f", l.dev(2)],
        vec!["lvremove", "k4f/st"],
    ];
    for s in &steps {
        l.ferro_ok(s);
        l.assert_vgck_clean("k4f");
        l.assert_same_reports();
    }
    l.lvm_ok(&["lvcreate", "-an", "-Zn", "-n", "by-lvm", "-L", "4m", "k4f"]);
    l.assert_same_reports();
    l.ferro_ok(&["vgremove", "-f", "k4f"]);
    assert!(
        !l.lvm(&["vgs", "k4f"]).status.success(),
        "lvm2 still sees the removed VG"
    );
    // lvm2 takes the orphaned 4Kn PVs back.
    l.lvm_ok(&["vgcreate", "again", l.dev(0)]);
    l.assert_same_reports();
}

/// The kernel's logical sector size of a block device (`blockdev --getss`).
fn logical_sector_size(dev: &std::path::Path) -> u64 {
    let out = std::process::Command::new("blockdev")
        .arg("--getss")
        .arg(dev)
        .output()
        .expect("blockdev");
    assert!(out.status.success(), "blockdev --getss {}", dev.display());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
