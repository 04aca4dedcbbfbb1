//! What the scan trusts (no root needed, in-memory PVs): a copy of a VG's
//! metadata on a device that is not one of its PVs is ignored whatever its
//! seqno, and a PV uuid found on two devices makes the VG unwritable with a
//! clear error instead of one copy silently winning.

mod common;

use common::mem::*;

use ferrolvm::lvm::disk::MemDisk;
use ferrolvm::lvm::pv_vg;
use ferrolvm::lvm::session::{self, writable_vg};
use ferrolvm::lvm::LvmError;
use ferrolvm_metadata::label::PvLabel;
use ferrolvm_metadata::ops;
use ferrolvm_metadata::scan::CopyState;

/// A VG "trust" on disk 0 holding one LV, and a spare disk 1.
fn vg_on_disk0() -> Vec<MemDisk> {
    let mut disks = mem_disks(2, 8);
    pvcreate_mem(&mut disks, &[0]);
    let scan = scan_mem(&disks);
    let pvs = [pv_vg::new_pv_of(&scan, 0).unwrap()];
    let mut vg = ops::new_vg("trust", uuid(1), 128, &pvs, vec![]).unwrap();
    ops::create_lv(&mut vg, new_lv("real", 2), 4, 1, None, None).unwrap();
    let w = session::plan_vg_commit(&scan, &mut vg, 0, &trailer()).unwrap();
    apply_all(&mut disks, &w);
    disks
}

/// Commits a change to the VG as seen on disk `dev` alone (a forger's copy).
fn commit_on_copy(disk: &MemDisk, change: impl Fn(&mut ferrolvm_metadata::Vg)) -> MemDisk {
    let mut one = vec![MemDisk {
        data: disk.data.clone(),
        path: disk.path.clone(),
    }];
    let scan = scan_mem(&one);
    let found = scan.vg("trust").unwrap();
    let mut vg = found.vg.clone();
    change(&mut vg);
    let w = session::plan_vg_commit(&scan, &mut vg, found.vg.seqno, &trailer()).unwrap();
    apply_all(&mut one, &w);
    one.pop().unwrap()
}

/// Rewrites the label of `disk` to carry `pv_uuid`.
fn relabel(disk: &mut MemDisk, pv_uuid: ferrolvm_metadata::Uuid) {
    let mut label = PvLabel::find(&disk.data[..2048]).unwrap().unwrap();
    label.pv_uuid = pv_uuid;
    let at = label.sector as usize * 512;
    disk.data[at..at + 512].copy_from_slice(&label.encode().unwrap());
}

#[test]
fn a_newer_copy_on_a_device_that_is_not_its_pv_is_ignored() {
    let mut disks = vg_on_disk0();
    let before = scan_mem(&disks).vg("trust").unwrap().vg.clone();
    // A tenant copies the PV's head onto its own device, commits a different
    // layout there (higher seqno), and gives the device another PV uuid.
    let mut forged = commit_on_copy(&disks[0], |vg| {
        ops::remove_lv(vg, "real").unwrap();
        ops::create_lv(vg, new_lv("forged", 3), 8, 1, None, None).unwrap();
    });
    forged.path = disks[1].path.clone();
    relabel(&mut forged, uuid(200));
    disks[1] = forged;

    let scan = scan_mem(&disks);
    let found = scan.vg("trust").unwrap();
    assert_eq!(
        found.vg.seqno, before.seqno,
        "the forged seqno must not win"
    );
    assert!(found.vg.lv("real").is_some() && found.vg.lv("forged").is_none());
    assert!(found.copies.iter().all(|c| c.dev == 0));
    assert!(
        scan.assembly
            .foreign
            .iter()
            .any(|c| c.dev == 1 && matches!(&c.state, CopyState::Foreign { vg, seqno } if vg == "trust" && *seqno == before.seqno + 1)),
        "the forged copy is reported as foreign: {:?}",
        scan.assembly.foreign
    );
    writable_vg(&scan, "trust").expect("the real VG stays writable");
}

#[test]
fn a_pv_uuid_on_two_devices_is_refused_not_guessed() {
    let mut disks = vg_on_disk0();
    // The same PV uuid, and a newer copy, on a second device.
    let mut twin = commit_on_copy(&disks[0], |vg| {
        ops::create_lv(vg, new_lv("twin", 4), 4, 1, None, None).unwrap();
    });
    twin.path = disks[1].path.clone();
    disks[1] = twin;

    let scan = scan_mem(&disks);
    let found = scan.vg("trust").unwrap();
    assert_eq!(found.duplicate_pvs.len(), 1, "{:?}", found.duplicate_pvs);
    assert_eq!(found.duplicate_pvs[0].1, vec![0, 1]);
    assert!(!found.consistent());
    match writable_vg(&scan, "trust") {
        Err(LvmError::DuplicatePv { vg, devices, .. }) => {
            assert_eq!(vg, "trust");
            assert_eq!(
                devices,
                vec!["/dev/mem0".to_string(), "/dev/mem1".to_string()]
            );
        }
        other => panic!("expected a duplicate-PV refusal, got {other:?}"),
    }
}
