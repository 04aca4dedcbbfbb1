//! A commit updates the session's scan from its own plan instead of
//! rereading every device (`commit::after_commit`). These tests hold that
//! computed scan to what a reread finds, byte for byte, across wrapping
//! circular buffers, a stale copy being repaired, and label rewrites (which
//! the computation declines). In-memory PVs, no root needed.

mod common;

use common::mem::*;

use ferrolvm::lvm::disk::MemDisk;
use ferrolvm::lvm::pv_vg;
use ferrolvm::lvm::scan::Scan;
use ferrolvm::lvm::session;
use ferrolvm_metadata::commit::{self, Write};
use ferrolvm_metadata::scan::{assemble, CopyState};
use ferrolvm_metadata::{ops, Vg};

/// VG "calc" on two PVs of two 32 KiB mdas each; returns its disks.
fn two_pv_vg() -> Vec<MemDisk> {
    let mut disks = mem_disks(2, 8);
    pvcreate_mem(&mut disks, &[0, 1]);
    let scan = scan_mem(&disks);
    let pvs = [
        pv_vg::new_pv_of(&scan, 0).unwrap(),
        pv_vg::new_pv_of(&scan, 1).unwrap(),
    ];
    let mut vg = ops::new_vg("calc", uuid(1), 128, &pvs, vec![]).unwrap();
    let w = session::plan_vg_commit(&scan, &mut vg, 0, &trailer()).unwrap();
    apply_all(&mut disks, &w);
    disks
}

/// Plans `change` on the VG as `scan` has it; returns the writes and text.
fn plan(scan: &Scan, change: impl FnOnce(&mut Vg)) -> (Vec<Write>, Vec<u8>) {
    let found = scan.vg("calc").unwrap();
    let mut vg = found.vg.clone();
    change(&mut vg);
    let w = session::plan_vg_commit(scan, &mut vg, found.vg.seqno, &trailer()).unwrap();
    vg.seqno = found.vg.seqno + 1;
    (w, vg.to_text(&trailer()))
}

/// The computed scan after `writes`, checked against a reread of `disks`
/// (which the writes have reached).
fn assert_computed_is_reread(before: &Scan, writes: &[Write], text: &[u8], disks: &[MemDisk]) {
    let mut reads = before.reads.clone();
    assert!(
        commit::after_commit(&mut reads, writes, text).unwrap(),
        "a commit without label writes is computed"
    );
    let reread = scan_mem(disks);
    assert_eq!(format!("{reads:?}"), format!("{:?}", reread.reads));
    let computed = assemble(&reads);
    let (c, r) = (
        computed.vgs.iter().find(|v| v.vg.name == "calc").unwrap(),
        reread.vg("calc").unwrap(),
    );
    assert_eq!(c.text, r.text);
    assert_eq!(c.copies, r.copies);
    assert!(c.copies.iter().all(|c| c.state == CopyState::Current));
}

#[test]
fn computed_scans_match_rereads_through_wrapping_buffers() {
    let mut disks = two_pv_vg();
    // Each text is over 1 KiB; 40 commits wrap 32 KiB buffers several times.
    let mut wrapped = 0;
    for i in 0..40u8 {
        let before = scan_mem(&disks);
        let (w, text) = plan(&before, |vg| {
            ops::create_lv(vg, new_lv(&format!("lv{i}"), 10 + i), 1, 1, None, None).unwrap();
        });
        // A text that wraps is written in two parts.
        let count = |p: commit::Phase| w.iter().filter(|w| w.phase == p).count();
        if count(commit::Phase::Text) > count(commit::Phase::Commit) {
            wrapped += 1;
        }
        apply_all(&mut disks, &w);
        assert_computed_is_reread(&before, &w, &text, &disks);
    }
    assert!(wrapped > 0, "some text wrapped around its buffer");
}

#[test]
fn a_computed_scan_sees_the_stale_copy_repaired() {
    let mut disks = two_pv_vg();
    // A commit that reached only disk 0 (a crash between devices): disk 1's
    // copies are stale.
    let before = scan_mem(&disks);
    let (w, _) = plan(&before, |vg| {
        ops::create_lv(vg, new_lv("half", 3), 1, 1, None, None).unwrap();
    });
    let only0: Vec<Write> = w.into_iter().filter(|w| w.dev == 0).collect();
    apply_all(&mut disks, &only0);
    let stale = scan_mem(&disks);
    let copies = &stale.vg("calc").unwrap().copies;
    assert!(copies
        .iter()
        .any(|c| matches!(c.state, CopyState::Stale { .. })));
    let (w, text) = plan(&stale, |vg| {
        ops::create_lv(vg, new_lv("next", 4), 1, 1, None, None).unwrap();
    });
    apply_all(&mut disks, &w);
    assert_computed_is_reread(&stale, &w, &text, &disks);
}

#[test]
fn label_rewrites_are_left_to_a_reread() {
    // A fresh VG's first commit marks its PVs used: label writes.
    let mut disks = mem_disks(1, 8);
    pvcreate_mem(&mut disks, &[0]);
    let scan = scan_mem(&disks);
    let pvs = [pv_vg::new_pv_of(&scan, 0).unwrap()];
    let mut vg = ops::new_vg("calc", uuid(1), 128, &pvs, vec![]).unwrap();
    let w = session::plan_vg_commit(&scan, &mut vg, 0, &trailer()).unwrap();
    assert!(w.iter().any(|w| w.phase == commit::Phase::Label));
    let mut reads = scan.reads.clone();
    let text = vg.to_text(&trailer());
    assert!(!commit::after_commit(&mut reads, &w, &text).unwrap());
    assert_eq!(format!("{reads:?}"), format!("{:?}", scan.reads));
}

#[test]
fn a_plan_for_another_text_or_an_unread_mda_is_refused_unchanged() {
    let disks = two_pv_vg();
    let before = scan_mem(&disks);
    let (w, text) = plan(&before, |vg| {
        ops::create_lv(vg, new_lv("x", 5), 1, 1, None, None).unwrap();
    });
    let mut reads = before.reads.clone();
    let mut other = text.clone();
    other[0] ^= 1;
    assert!(commit::after_commit(&mut reads, &w, &other).is_err());
    assert_eq!(format!("{reads:?}"), format!("{:?}", before.reads));
    let mut moved = w.clone();
    for m in moved
        .iter_mut()
        .filter(|m| m.phase == commit::Phase::Commit)
    {
        m.offset += 512;
    }
    assert!(commit::after_commit(&mut reads, &moved, &text).is_err());
    assert_eq!(format!("{reads:?}"), format!("{:?}", before.reads));
}
