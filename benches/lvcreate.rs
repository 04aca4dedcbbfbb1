//! Benchmark (not a test): `ferrolvm lvcreate -an` / `lvremove` against
//! lvm2's `lvcreate --driverloaded n -an -Zn` / `lvremove` on the same kind
//! of loop-backed VG, interleaved in one run; and parse + serialize of a VG
//! with 2,000 LVs. Needs root and lvm2. Prints Markdown tables, the last
//! one each single-op lever's effect alone (the commit's scan computed, not
//! reread; a static binary), lever on and off interleaved.
//!
//! `cargo bench --bench lvcreate [-- N]` (N operations per tool, default 200).
//! The static-binary row needs `bash scripts/build-static.sh` first.

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;

use ferrolvm_metadata::ops::{self, NewLv, NewPv};
use ferrolvm_metadata::{Trailer, Uuid, Vg};

fn big_vg(lvs: u32) -> Vg {
    let uuid = |n: u32| {
        let mut b = [0u8; 32];
        b[0] = (n % 62) as u8;
        b[1] = (n / 62 % 62) as u8;
        b[2] = (n / 3844) as u8;
        Uuid::from_random(b)
    };
    let pvs: Vec<NewPv> = (0..4)
        .map(|i| NewPv {
            id: uuid(900_000 + i),
            device: format!("/dev/sd{i}"),
            dev_size: 1 << 31,
            pe_start: 2048,
            data_sectors: (1 << 31) - 2048,
        })
        .collect();
    let mut vg = ops::new_vg("bench", uuid(999_999), 8192, &pvs, vec![]).unwrap();
    for i in 0..lvs {
        let new = NewLv {
            name: format!("pvc-{i:08}-0000-4000-8000-000000000000"),
            id: uuid(i),
            tags: vec![format!("ferrolvm.io/volume={i}")],
            creation_time: 1_700_000_000,
            creation_host: "node-1".into(),
        };
        ops::create_lv(&mut vg, new, 1 + i % 7, 1, None, None).unwrap();
    }
    vg
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let ferro = env!("CARGO_BIN_EXE_ferrolvm");
    let dir = tempfile::tempdir().unwrap();
    let (a0, a1, b0, b1) = (
        make_loop(dir.path(), "a0", 2048),
        make_loop(dir.path(), "a1", 2048),
        make_loop(dir.path(), "b0", 2048),
        make_loop(dir.path(), "b1", 2048),
    );
    let p = |l: &Loop| l.0.display().to_string();
    let da = format!("{},{}", p(&a0), p(&a1));
    let db = format!("{},{}", p(&b0), p(&b1));
    run(Command::new(ferro).args([
        "vgcreate",
        "--devices",
        &da,
        "bench-ferro",
        &p(&a0),
        &p(&a1),
    ]));
    run(lvm().args([
        "vgcreate",
        "--devices",
        &db,
        "--driverloaded",
        "n",
        "bench-lvm",
        &p(&b0),
        &p(&b1),
    ]));

    let fixed = static_binary();
    let (mut fc, mut lc, mut fr, mut lr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sc, mut sr) = (Vec::new(), Vec::new());
    let create = |bin: &str, name: &str| {
        run(Command::new(bin).args([
            "lvcreate",
            "--devices",
            &da,
            "-an",
            "-n",
            name,
            "-L",
            "4m",
            "bench-ferro",
        ]))
    };
    let remove = |bin: &str, name: &str| {
        run(Command::new(bin).args([
            "lvremove",
            "--devices",
            &da,
            "--driverloaded",
            "n",
            &format!("bench-ferro/{name}"),
        ]))
    };
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
            "--driverloaded",
            "n",
            "-an",
            "-Zn",
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
            "--driverloaded",
            "n",
            "-y",
            &format!("bench-lvm/{name}"),
        ])));
    }

    // In-process, as the CSI node plugin will call it: no process start.
    // Interleaved with the same calls on a host that rereads every device
    // after each commit, as ferrolvm did before the scan was computed.
    let host = ferrolvm::lvm::host::Host::load(Some(vec![a0.0.clone(), a1.0.clone()]));
    let reread = ferrolvm::lvm::host::Host {
        reread_after_commit: true,
        ..host.clone()
    };
    let in_create = |host: &ferrolvm::lvm::host::Host, name: &str| {
        let t = Instant::now();
        ferrolvm::lvm::session::modify_vg(host, "bench-ferro", |vg, _| {
            let new = NewLv {
                name: name.into(),
                id: ferrolvm::lvm::session::random_uuid(),
                tags: vec![],
                creation_time: 1,
                creation_host: "h".into(),
            };
            ops::create_lv(vg, new, 1, 1, None, None)?;
            Ok("bench".into())
        })
        .unwrap();
        t.elapsed()
    };
    let in_remove = |host: &ferrolvm::lvm::host::Host, name: &str| {
        let t = Instant::now();
        ferrolvm::lvm::session::modify_vg(host, "bench-ferro", |vg, _| {
            ops::remove_lv(vg, name)?;
            Ok("bench".into())
        })
        .unwrap();
        t.elapsed()
    };
    let (mut ic, mut ir, mut rc, mut rr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        ic.push(in_create(&host, &format!("in{i}")));
        rc.push(in_create(&reread, &format!("rr{i}")));
    }
    for i in 0..n {
        ir.push(in_remove(&host, &format!("in{i}")));
        rr.push(in_remove(&reread, &format!("rr{i}")));
    }

    // In-process: parse and serialize a VG of 2,000 LVs.
    let vg = big_vg(2000);
    let t = Trailer {
        generator: "bench".into(),
        description: "d".into(),
        creation_host: "h".into(),
        uname: "u".into(),
        creation_time: 1,
    };
    let text = vg.to_text(&t);
    let (mut parse, mut ser) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let s = Instant::now();
        let back = Vg::from_text(&text).unwrap();
        parse.push(s.elapsed());
        let s = Instant::now();
        let out = back.to_text(&t);
        ser.push(s.elapsed());
        assert_eq!(out.len(), text.len());
    }

    println!("| operation ({n} each, interleaved) | ferrolvm median | ferrolvm p99 | lvm2 median | lvm2 p99 | lvm2/ferrolvm (median) |");
    println!("|---|---|---|---|---|---|");
    for (what, f, l) in [
        ("lvcreate -an", fc.clone(), lc.clone()),
        ("lvremove", fr.clone(), lr.clone()),
    ] {
        let (fm, fp) = stats(f);
        let (lm, lp) = stats(l);
        println!(
            "| {what} | {fm:.2} ms | {fp:.2} ms | {lm:.2} ms | {lp:.2} ms | {:.1}x |",
            lm / fm
        );
    }
    let (lcm, _) = stats(lc.clone());
    let (lrm, _) = stats(lr.clone());
    for (what, f, lm) in [
        ("lvcreate, in-process (node plugin path)", ic.clone(), lcm),
        ("lvremove, in-process (node plugin path)", ir.clone(), lrm),
    ] {
        let (fm, fp) = stats(f);
        println!(
            "| {what} | {fm:.2} ms | {fp:.2} ms | {lm:.2} ms | | {:.1}x |",
            lm / fm
        );
    }
    println!();
    lever_header(n);
    row("scan computed from the plan: lvcreate, in-process", ic, rc);
    row("scan computed from the plan: lvremove, in-process", ir, rr);
    match fixed {
        Some(_) => {
            row("static musl binary: lvcreate -an (CLI)", sc, fc);
            row("static musl binary: lvremove (CLI)", sr, fr);
        }
        None => println!("| static musl binary | not measured: run `bash scripts/build-static.sh` first | | | | |"),
    }
    let (pm, pp) = stats(parse);
    let (sm, sp) = stats(ser);
    println!();
    println!(
        "| VG with 2,000 LVs ({} KiB of text) | median | p99 |",
        text.len() / 1024
    );
    println!("|---|---|---|");
    println!("| parse (text -> model) | {pm:.2} ms | {pp:.2} ms |");
    println!("| serialize (model -> text) | {sm:.2} ms | {sp:.2} ms |");
    drop((a0, a1, b0, b1));
    let _ = Command::new(ferro)
        .args([
            "vgremove",
            "--devices",
            &da,
            "--driverloaded",
            "n",
            "-f",
            "bench-ferro",
        ])
        .output();
}
