//! Crash safety: every commit is cut after each single write (cleanly, and
//! with the next write torn), and the result must read as exactly the old or
//! the new VG. The in-memory part needs no root; the loop-device part has
//! lvm2 check the same states.

mod common;

use common::mem::*;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferrolvm::lvm::disk::{BlockDisk, Disk, MemDisk};
use ferrolvm::lvm::pv_vg;
use ferrolvm::lvm::scan::{scan_paths, Scan};
use ferrolvm::lvm::session;
use ferrolvm_metadata::commit::Write;
use ferrolvm_metadata::ops;
use ferrolvm_metadata::Vg;

/// How a cut write lands.
#[derive(Clone, Copy, Debug)]
enum Tear {
    /// Not at all.
    Clean,
    /// Its first half: half the sectors of a multi-sector write, half the
    /// bytes of a single sector.
    Half,
}

/// Passes writes through until the shared budget runs out, then lands the
/// cut write per `tear` and fails, like a device losing power.
struct Faulty<'a> {
    inner: &'a mut dyn Disk,
    budget: Arc<AtomicUsize>,
    tear: Tear,
}

impl Disk for Faulty<'_> {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(offset, len)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.budget.load(Ordering::SeqCst) == 0 {
            if let Tear::Half = self.tear {
                let keep = if data.len() > 512 {
                    data.len() / 1024 * 512
                } else {
                    256
                };
                if keep > 0 {
                    // A torn single sector: new bytes at the front, old behind.
                    let mut torn = self.inner.read_at(offset, data.len().div_ceil(512) * 512)?;
                    torn[..keep].copy_from_slice(&data[..keep]);
                    self.inner.write_at(offset, &torn)?;
                }
            }
            self.budget.store(usize::MAX, Ordering::SeqCst);
            return Err(io::Error::other("power cut"));
        }
        if self.budget.load(Ordering::SeqCst) != usize::MAX {
            self.budget.fetch_sub(1, Ordering::SeqCst);
            return self.inner.write_at(offset, data);
        }
        Err(io::Error::other("power cut"))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// Applies `writes` to `disks`, cut after `k` writes with `tear`.
fn run_cut(disks: Vec<&mut dyn Disk>, writes: &[Write], k: usize, tear: Tear) -> bool {
    let budget = Arc::new(AtomicUsize::new(k));
    let mut faulty: Vec<Faulty> = disks
        .into_iter()
        .map(|d| Faulty {
            inner: d,
            budget: budget.clone(),
            tear,
        })
        .collect();
    let mut refs: Vec<Option<&mut dyn Disk>> = faulty
        .iter_mut()
        .map(|f| Some(f as &mut dyn Disk))
        .collect();
    session::execute(&mut refs, writes).is_ok()
}

/// A VG change to crash-test: from the scanned state, the new VG (or None
/// when the change makes the VG disappear) and its writes.
type Change = dyn Fn(&Scan) -> (Option<Vg>, Vec<Write>);

fn lv_change(f: impl Fn(&mut Vg) + 'static) -> Box<Change> {
    Box::new(move |scan: &Scan| {
        let found = scan.vg("crash").expect("VG before the change");
        let mut vg = found.vg.clone();
        f(&mut vg);
        let w = session::plan_vg_commit(scan, &mut vg, found.vg.seqno, &trailer()).unwrap();
        (Some(vg), w)
    })
}

/// Cuts `change` after every write, both ways, and checks old-or-new; then
/// checks that the next commit repairs every stale copy.
fn crash_every_write(disks: &[MemDisk], change: &Change, what: &str) -> usize {
    let scan = scan_mem(disks);
    let old = scan.vg("crash").map(|f| f.vg.clone());
    let (new, writes) = change(&scan);
    assert!(writes.len() >= 2, "{what}: a commit has several writes");
    let mut cases = 0;
    for k in 0..=writes.len() {
        for tear in [Tear::Clean, Tear::Half] {
            let mut copy = copy_of(disks);
            {
                let refs: Vec<&mut dyn Disk> =
                    copy.iter_mut().map(|d| d as &mut dyn Disk).collect();
                let finished = run_cut(refs, &writes, k, tear);
                assert_eq!(finished, k == writes.len(), "{what}: cut at {k}");
            }
            check_old_or_new(
                copy,
                &old,
                &new,
                &format!("{what}: cut after {k} writes ({tear:?})"),
            );
            cases += 1;
        }
    }
    // A disk may complete the writes of one flush group in any order: land
    // every earlier group whole and any subset of one group.
    for (g, group) in flush_groups(&writes).iter().enumerate() {
        let before: usize = flush_groups(&writes)[..g].iter().map(|x| x.len()).sum();
        for mask in subsets(group.len()) {
            let mut copy = copy_of(disks);
            apply_raw(&mut copy, &writes[..before]);
            let landed: Vec<Write> = group
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, w)| w.clone())
                .collect();
            apply_raw(&mut copy, &landed);
            check_old_or_new(
                copy,
                &old,
                &new,
                &format!("{what}: group {g} landed as {mask:#b}"),
            );
            cases += 1;
        }
    }
    cases
}

fn copy_of(disks: &[MemDisk]) -> Vec<MemDisk> {
    disks
        .iter()
        .map(|d| MemDisk {
            data: d.data.clone(),
            path: d.path.clone(),
        })
        .collect()
}

/// Lands `writes` as they are, without flushes in between.
fn apply_raw(disks: &mut [MemDisk], writes: &[Write]) {
    for w in writes {
        disks[w.dev].write_at(w.offset, &w.data).unwrap();
    }
}

/// The flush groups `session::execute` issues: runs of writes that share a barrier.
fn flush_groups(writes: &[Write]) -> Vec<&[Write]> {
    writes
        .chunk_by(|a, b| a.phase.barrier() == b.phase.barrier())
        .collect()
}

/// Which subsets of a group of `n` writes to land: all of them up to 2^8,
/// else 256 masks spread over the space (the empty and the full one included).
fn subsets(n: usize) -> Vec<u64> {
    if n <= 8 {
        return (0..1u64 << n).collect();
    }
    let full = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = vec![0, full];
    while out.len() < 256 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x & full);
    }
    out
}

/// The VG reads as exactly `old` or `new`, and the next commit (any change)
/// leaves every copy current.
fn check_old_or_new(mut copy: Vec<MemDisk>, old: &Option<Vg>, new: &Option<Vg>, case: &str) {
    let after = scan_mem(&copy);
    let seen = after.vg("crash").map(|f| f.vg.clone());
    assert!(
        seen == *old || seen == *new,
        "{case}: reads neither old nor new: {:?}",
        seen.map(|v| v.seqno)
    );
    if let Some(found) = after.vg("crash") {
        let mut vg = found.vg.clone();
        vg.tags.push("next".into());
        let w = session::plan_vg_commit(&after, &mut vg, found.vg.seqno, &trailer()).unwrap();
        apply_all(&mut copy, &w);
        let healed = scan_mem(&copy);
        let f = healed.vg("crash").unwrap();
        assert!(
            f.consistent(),
            "{case}: not healed by the next commit: {:?}",
            f.copies
        );
        assert_eq!(f.vg, vg);
    }
}

#[test]
fn every_commit_kind_survives_a_cut_after_every_write() {
    let mut disks = mem_disks(3, 8);
    pvcreate_mem(&mut disks, &[0, 1, 2]);
    let mut cases = 0;

    // vgcreate: old = no VG at all.
    let create: Box<Change> = Box::new(|scan: &Scan| {
        let pvs = [
            pv_vg::new_pv_of(scan, 0).unwrap(),
            pv_vg::new_pv_of(scan, 1).unwrap(),
        ];
        let mut vg = ops::new_vg("crash", uuid(1), 128, &pvs, vec![]).unwrap();
        let w = session::plan_vg_commit(scan, &mut vg, 0, &trailer()).unwrap();
        (Some(vg), w)
    });
    cases += crash_every_write(&disks, &create, "vgcreate");
    let (_, w) = create(&scan_mem(&disks));
    apply_all(&mut disks, &w);

    let steps: Vec<(&str, Box<Change>)> = vec![
        (
            "lvcreate linear",
            lv_change(|vg| ops::create_lv(vg, new_lv("a", 2), 10, 1, None, None).unwrap()),
        ),
        (
            "lvcreate striped",
            lv_change(|vg| ops::create_lv(vg, new_lv("s", 3), 8, 2, Some(128), None).unwrap()),
        ),
        (
            "lvextend",
            lv_change(|vg| ops::extend_lv(vg, "a", 40, None).unwrap()),
        ),
        (
            "lvresize smaller",
            lv_change(|vg| ops::reduce_lv(vg, "a", 30).unwrap()),
        ),
        (
            "lvrename",
            lv_change(|vg| ops::rename_lv(vg, "a", "b").unwrap()),
        ),
        ("lvremove", lv_change(|vg| ops::remove_lv(vg, "s").unwrap())),
    ];
    for (what, change) in &steps {
        cases += crash_every_write(&disks, change.as_ref(), what);
        let (_, w) = change(&scan_mem(&disks));
        apply_all(&mut disks, &w);
    }

    // vgextend: the new PV's mdas join the commit.
    let extend: Box<Change> = Box::new(|scan: &Scan| {
        let found = scan.vg("crash").unwrap();
        let mut vg = found.vg.clone();
        ops::add_pvs(&mut vg, &[pv_vg::new_pv_of(scan, 2).unwrap()]).unwrap();
        let w = session::plan_vg_commit(scan, &mut vg, found.vg.seqno, &trailer()).unwrap();
        (Some(vg), w)
    });
    cases += crash_every_write(&disks, extend.as_ref(), "vgextend");
    let (_, w) = extend(&scan_mem(&disks));
    apply_all(&mut disks, &w);

    // Commit until a circular buffer wraps, then crash-test the wrapping commit.
    let mut n = 10u8;
    loop {
        let scan = scan_mem(&disks);
        let found = scan.vg("crash").unwrap();
        let mut vg = found.vg.clone();
        ops::create_lv(&mut vg, new_lv(&format!("w{n}"), n), 1, 1, None, None).unwrap();
        let w = session::plan_vg_commit(&scan, &mut vg, found.vg.seqno, &trailer()).unwrap();
        // A wrapped copy is two text writes into one mda; each device has two mdas.
        let text_writes = |dev: usize| {
            w.iter()
                .filter(|w| w.dev == dev && w.phase == ferrolvm_metadata::commit::Phase::Text)
                .count()
        };
        let wraps = (0..3).any(|d| text_writes(d) > 2);
        if wraps {
            let name = format!("w{n}");
            let change = lv_change(move |vg| {
                ops::create_lv(vg, new_lv(&name, 200), 1, 1, None, None).unwrap()
            });
            cases += crash_every_write(&disks, change.as_ref(), "wrapping commit");
            break;
        }
        apply_all(&mut disks, &w);
        n += 1;
        assert!(n < 150, "never wrapped");
    }
    assert!(cases > 100, "only {cases} crash cases ran");
}

/// The same cuts on loop devices: lvm2 must read the old or the new VG,
/// and after ferrolvm's repair (`vgck --updatemetadata`) `vgck` is clean.
#[test]
fn loop_devices_lvm2_agrees_after_every_cut() {
    let l = common::Loops::new(2, 16);
    l.ferro_ok(&[
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
    l.ferro_ok(&["vgcreate", "-s", "64k", "crash-lvm", l.dev(0), l.dev(1)]);
    l.ferro_ok(&["lvcreate", "-an", "-n", "before", "-L", "1m", "crash-lvm"]);
    let images: Vec<Vec<u8>> = l.devs.iter().map(|d| std::fs::read(d).unwrap()).collect();
    let restore = || {
        for (d, img) in l.devs.iter().zip(&images) {
            let mut disk = BlockDisk::open(d, true).unwrap();
            disk.write_at(0, img).unwrap();
            disk.flush().unwrap();
        }
    };
    let plan = || {
        let scan = scan_paths(&l.devs);
        let found = scan.vg("crash-lvm").unwrap();
        let mut vg = found.vg.clone();
        ops::create_lv(&mut vg, new_lv("after", 9), 16, 2, Some(128), None).unwrap();
        let old_seqno = found.vg.seqno as u64;
        let w = session::plan_vg_commit(&scan, &mut vg, found.vg.seqno, &trailer()).unwrap();
        (old_seqno, w)
    };
    let (old_seqno, writes) = plan();
    for k in 0..=writes.len() {
        for tear in [Tear::Clean, Tear::Half] {
            restore();
            let (_, writes) = plan();
            {
                let mut opened: Vec<BlockDisk> = l
                    .devs
                    .iter()
                    .map(|d| BlockDisk::open(d, true).unwrap())
                    .collect();
                let refs: Vec<&mut dyn Disk> =
                    opened.iter_mut().map(|d| d as &mut dyn Disk).collect();
                run_cut(refs, &writes, k, tear);
            }
            let seqno = l.seqno("crash-lvm");
            let names = l.lv_names(false);
            let ours = l.lv_names(true);
            assert_eq!(names, ours, "cut at {k} ({tear:?}): the tools disagree");
            if seqno == old_seqno {
                assert_eq!(names, vec!["before"], "cut at {k} ({tear:?})");
            } else {
                assert_eq!(seqno, old_seqno + 1, "cut at {k} ({tear:?})");
                assert_eq!(names, vec!["after", "before"], "cut at {k} ({tear:?})");
            }
            l.ferro_ok(&["vgck", "--updatemetadata", "crash-lvm"]);
            l.assert_vgck_clean("crash-lvm");
            l.ferro_ok(&["vgck", "crash-lvm"]);
        }
    }
}

/// Lands `writes` cut after every write, and with every earlier flush group
/// whole and any subset of one group, calling `check` on each state.
fn every_cut(disks: &[MemDisk], writes: &[Write], check: &dyn Fn(&[MemDisk], &str)) -> usize {
    let mut cases = 0;
    for k in 0..=writes.len() {
        let mut copy = copy_of(disks);
        apply_raw(&mut copy, &writes[..k]);
        check(&copy, &format!("cut after {k} writes"));
        cases += 1;
    }
    let groups = flush_groups(writes);
    for (g, group) in groups.iter().enumerate() {
        let before: usize = groups[..g].iter().map(|x| x.len()).sum();
        for mask in subsets(group.len()) {
            let mut copy = copy_of(disks);
            apply_raw(&mut copy, &writes[..before]);
            for (i, w) in group.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    apply_raw(&mut copy, std::slice::from_ref(w));
                }
            }
            check(&copy, &format!("group {g} landed as {mask:#b}"));
            cases += 1;
        }
    }
    cases
}

/// pvcreate writes the mda headers before the label, so a label is never
/// found pointing at headers that do not decode; vgremove clears
/// PV_EXT_USED before wiping the slots, so the VG reads whole until it is
/// gone — under every cut and every reordering inside a flush group.
#[test]
fn pvcreate_and_vgremove_survive_every_cut() {
    // pvcreate on a blank device.
    let blank = mem_disks(1, 8);
    let (label, mdas) = pv_vg::new_pv_label(8 << 20, small_layout(), uuid(150)).unwrap();
    let writes = pv_vg::pvcreate_writes(0, &label, &mdas).unwrap();
    let mut prefixes = writes.len() + 1;
    let mut cases = every_cut(&blank, &writes, &|disks, case| {
        let scan = scan_mem(disks);
        let dev = &scan.devices[0];
        assert!(dev.error.is_none(), "pvcreate {case}: {:?}", dev.error);
        if dev.label.is_some() {
            let read = scan
                .reads
                .iter()
                .find(|r| r.dev == 0)
                .expect("a labelled device is read");
            assert!(
                read.mdas.iter().all(|m| m.header.is_ok()),
                "pvcreate {case}: the label points at a bad mda header"
            );
        }
    });

    // vgremove of a VG on two PVs with two mdas each.
    let mut disks = mem_disks(2, 8);
    pvcreate_mem(&mut disks, &[0, 1]);
    let scan = scan_mem(&disks);
    let pvs = [
        pv_vg::new_pv_of(&scan, 0).unwrap(),
        pv_vg::new_pv_of(&scan, 1).unwrap(),
    ];
    let mut vg = ops::new_vg("crash", uuid(1), 128, &pvs, vec![]).unwrap();
    ops::create_lv(&mut vg, new_lv("a", 2), 10, 1, None, None).unwrap();
    let w = session::plan_vg_commit(&scan, &mut vg, 0, &trailer()).unwrap();
    apply_all(&mut disks, &w);
    let scan = scan_mem(&disks);
    let whole = scan.vg("crash").unwrap().vg.clone();
    let (mdas, labels) = session::pv_state(&scan, &whole).unwrap();
    let mut writes = ferrolvm_metadata::commit::plan_labels(&labels, false).unwrap();
    writes.extend(ferrolvm_metadata::commit::plan_wipe(&mdas));
    prefixes += writes.len() + 1;
    cases += every_cut(&disks, &writes, &|disks, case| {
        let seen = scan_mem(disks).vg("crash").map(|f| f.vg.clone());
        assert!(
            seen.is_none() || seen.as_ref() == Some(&whole),
            "vgremove {case}: the VG reads neither whole nor gone"
        );
    });
    let gone = {
        let mut copy = copy_of(&disks);
        apply_raw(&mut copy, &writes);
        scan_mem(&copy).vg("crash").is_none()
    };
    assert!(gone, "all of vgremove's writes remove the VG");
    assert!(
        cases > prefixes,
        "every prefix and some reorderings: only {cases} cases"
    );
}
