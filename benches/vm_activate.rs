//! Benchmark inside the VM (not a test): create+activate and
//! deactivate+remove of N linear LVs with ferrolvm and with lvm2, on two
//! identical VGs, interleaved in one run; then each single-op lever alone
//! (the commit's scan computed, not reread; one shared device-mapper handle
//! and one status check per activation; a static binary, when the image
//! has `/usr/local/bin/ferrolvm-static`), on and off interleaved. Run with
//! `cargo run -p vm-tests -- bench`; it needs device-mapper.

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;
use ferrolvm_metadata::ops::NewLv;

fn main() {
    let n = vm_bench_count("bench");
    let ferro = env!("CARGO_BIN_EXE_ferrolvm");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        make_loop(dir.path(), "a", 2048),
        make_loop(dir.path(), "b", 2048),
    );
    let (da, db) = (a.0.display().to_string(), b.0.display().to_string());
    run(Command::new(ferro).args(["vgcreate", "--devices", &da, "bench-ferro", &da]));
    run(lvm().args(["vgcreate", "--devices", &db, "bench-lvm", &db]));

    let fixed = static_binary();
    let create = |bin: &str, name: &str| {
        run(Command::new(bin).args([
            "lvcreate",
            "--devices",
            &da,
            "-n",
            name,
            "-L",
            "4m",
            "bench-ferro",
        ]))
    };
    let remove = |bin: &str, name: &str| {
        run(Command::new(bin).args(["lvremove", "--devices", &da, &format!("bench-ferro/{name}")]))
    };
    let (mut fc, mut lc, mut fr, mut lr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sc, mut sr) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("lv{i}");
        fc.push(create(ferro, &name));
        if let Some(bin) = &fixed {
            sc.push(create(bin, &format!("st{i}")));
        }
        lc.push(run(lvm().args([
            "lvcreate",
            "--devices",
            &db,
            "-n",
            &name,
            "-L",
            "4m",
            "bench-lvm",
        ])));
    }
    for i in 0..n {
        let name = format!("lv{i}");
        fr.push(remove(ferro, &name));
        if let Some(bin) = &fixed {
            sr.push(remove(bin, &format!("st{i}")));
        }
        lr.push(run(lvm().args([
            "lvremove",
            "--devices",
            &db,
            "-f",
            &format!("bench-lvm/{name}"),
        ])));
    }
    // The node plugin's path: the same operations as library calls,
    // interleaved with the same calls on a host that rereads every device
    // after each commit (the scan lever off).
    let host = ferrolvm::lvm::host::Host::load(Some(vec![a.0.clone()]));
    let reread = ferrolvm::lvm::host::Host {
        reread_after_commit: true,
        ..host.clone()
    };
    let in_create = |host: &ferrolvm::lvm::host::Host, name: &str| {
        let t = Instant::now();
        ferrolvm::lvm::volumes::create(host, "bench-ferro", true, |_, _| {
            Ok(ferrolvm::lvm::volumes::LvSpec {
                new: NewLv {
                    name: name.into(),
                    id: ferrolvm::lvm::session::random_uuid(),
                    tags: vec![],
                    creation_time: 1,
                    creation_host: "vm".into(),
                },
                extents: 1,
                stripes: 1,
                stripe_size: None,
                pvs: None,
                zero: true,
            })
        })
        .unwrap();
        t.elapsed()
    };
    let in_remove = |host: &ferrolvm::lvm::host::Host, name: &str| {
        let t = Instant::now();
        ferrolvm::lvm::volumes::remove(host, "bench-ferro", name, false).unwrap();
        t.elapsed()
    };
    // And on a host that opens device-mapper afresh for each change and
    // checks a device's absence twice (the syscall lever off).
    let per_call = ferrolvm::lvm::host::Host {
        dm_per_call: true,
        ..host.clone()
    };
    let (mut ic, mut ir, mut rc, mut rr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut pc, mut pr) = (Vec::new(), Vec::new());
    for i in 0..n {
        ic.push(in_create(&host, &format!("in{i}")));
        rc.push(in_create(&reread, &format!("rr{i}")));
        pc.push(in_create(&per_call, &format!("pc{i}")));
    }
    for i in 0..n {
        ir.push(in_remove(&host, &format!("in{i}")));
        rr.push(in_remove(&reread, &format!("rr{i}")));
        pr.push(in_remove(&per_call, &format!("pc{i}")));
    }
    // Thin LVs in a pool of each tool.
    run(Command::new(ferro).args([
        "lvcreate",
        "--devices",
        &da,
        "--type",
        "thin-pool",
        "-L",
        "1g",
        "-n",
        "pool",
        "bench-ferro",
    ]));
    run(lvm().args([
        "lvcreate",
        "--devices",
        &db,
        "--type",
        "thin-pool",
        "-L",
        "1g",
        "-n",
        "pool",
        "bench-lvm",
    ]));
    let (mut tfc, mut tlc, mut tfr, mut tlr, mut tic, mut tir) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for i in 0..n {
        let name = format!("t{i}");
        tfc.push(run(Command::new(ferro).args([
            "lvcreate",
            "--devices",
            &da,
            "-T",
            "bench-ferro/pool",
            "-V",
            "64m",
            "-n",
            &name,
        ])));
        tlc.push(run(lvm().args([
            "lvcreate",
            "--devices",
            &db,
            "-T",
            "bench-lvm/pool",
            "-V",
            "64m",
            "-n",
            &name,
        ])));
    }
    for i in 0..n {
        let name = format!("t{i}");
        tfr.push(run(Command::new(ferro).args([
            "lvremove",
            "--devices",
            &da,
            &format!("bench-ferro/{name}"),
        ])));
        tlr.push(run(lvm().args([
            "lvremove",
            "--devices",
            &db,
            "-f",
            &format!("bench-lvm/{name}"),
        ])));
    }
    for i in 0..n {
        let name = format!("ti{i}");
        let t = Instant::now();
        ferrolvm::lvm::volumes::create_thin(&host, "bench-ferro", "pool", None, true, |_| {
            Ok((
                NewLv {
                    name: name.clone(),
                    id: ferrolvm::lvm::session::random_uuid(),
                    tags: vec![],
                    creation_time: 1,
                    creation_host: "vm".into(),
                },
                16,
            ))
        })
        .unwrap();
        tic.push(t.elapsed());
    }
    for i in 0..n {
        let t = Instant::now();
        ferrolvm::lvm::volumes::remove(&host, "bench-ferro", &format!("ti{i}"), false).unwrap();
        tir.push(t.elapsed());
    }

    println!("| linear LVs ({n} each, interleaved, in the VM under TCG) | ferrolvm median | ferrolvm p99 | lvm2 median | lvm2 p99 | lvm2/ferrolvm (median) |");
    println!("|---|---|---|---|---|---|");
    let (fc2, fr2, ic2, ir2) = (fc.clone(), fr.clone(), ic.clone(), ir.clone());
    let (ic3, ir3) = (ic.clone(), ir.clone());
    row("create + activate (CLI)", fc, lc.clone());
    row("deactivate + remove (CLI)", fr, lr.clone());
    row("create + activate (in-process, node plugin path)", ic, lc);
    row("deactivate + remove (in-process, node plugin path)", ir, lr);
    row("thin: create + activate (CLI)", tfc, tlc.clone());
    row("thin: deactivate + remove (CLI)", tfr, tlr.clone());
    row(
        "thin: create + activate (in-process, node plugin path)",
        tic,
        tlc,
    );
    row(
        "thin: deactivate + remove (in-process, node plugin path)",
        tir,
        tlr,
    );
    println!();
    lever_header(n);
    row(
        "scan computed from the plan: create + activate, in-process",
        ic2,
        rc,
    );
    row(
        "scan computed from the plan: deactivate + remove, in-process",
        ir2,
        rr,
    );
    row(
        "one shared device-mapper handle, one status check: create + activate, in-process",
        ic3,
        pc,
    );
    row(
        "one shared device-mapper handle, one status check: deactivate + remove, in-process",
        ir3,
        pr,
    );
    match fixed {
        Some(_) => {
            row("static musl binary: create + activate (CLI)", sc, fc2);
            row("static musl binary: deactivate + remove (CLI)", sr, fr2);
        }
        None => println!(
            "| static musl binary | not measured: no /usr/local/bin/ferrolvm-static | | | | |"
        ),
    }
    run(Command::new(ferro).args(["vgremove", "--devices", &da, "-f", "bench-ferro"]));
}
