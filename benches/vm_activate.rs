//! Benchmark inside the VM (not a test): create+activate and
//! deactivate+remove of N linear LVs with ferrolvm and with lvm2, on two
//! identical VGs, interleaved in one run. Run with
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

    let (mut fc, mut lc, mut fr, mut lr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("lv{i}");
        fc.push(run(Command::new(ferro).args([
            "lvcreate",
            "--devices",
            &da,
            "-n",
            &name,
            "-L",
            "4m",
            "bench-ferro",
        ])));
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
        fr.push(run(Command::new(ferro).args([
            "lvremove",
            "--devices",
            &da,
            &format!("bench-ferro/{name}"),
        ])));
        lr.push(run(lvm().args([
            "lvremove",
            "--devices",
            &db,
            "-f",
            &format!("bench-lvm/{name}"),
        ])));
    }
    // The node plugin's path: the same operations as library calls.
    let host = ferrolvm::lvm::host::Host::load(Some(vec![a.0.clone()]));
    let (mut ic, mut ir) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("in{i}");
        let t = Instant::now();
        ferrolvm::lvm::volumes::create(&host, "bench-ferro", true, |_, _| {
            Ok(ferrolvm::lvm::volumes::LvSpec {
                new: NewLv {
                    name: name.clone(),
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
        ic.push(t.elapsed());
    }
    for i in 0..n {
        let t = Instant::now();
        ferrolvm::lvm::volumes::remove(&host, "bench-ferro", &format!("in{i}"), false).unwrap();
        ir.push(t.elapsed());
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
    run(Command::new(ferro).args(["vgremove", "--devices", &da, "-f", "bench-ferro"]));
}
