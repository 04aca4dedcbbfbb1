//! In-memory PVs for tests that need no root: disks, pvcreate, commits,
//! scans, with deterministic uuids.

use ferrolvm::lvm::disk::{Disk, MemDisk};
use ferrolvm::lvm::pv_vg::{self, PvLayout};
use ferrolvm::lvm::scan::{scan_disks, Scan};
use ferrolvm::lvm::session;
use ferrolvm_metadata::commit::Write;
use ferrolvm_metadata::ops::NewLv;
use ferrolvm_metadata::{Trailer, Uuid};

pub fn trailer() -> Trailer {
    Trailer {
        generator: "crash test".into(),
        description: "t".into(),
        creation_host: "h".into(),
        uname: "u".into(),
        creation_time: 1,
    }
}

/// Distinct, deterministic uuids (the alphabet has 62 characters).
pub fn uuid(n: u8) -> Uuid {
    let mut b = [0u8; 32];
    b[0] = n % 62;
    b[1] = n / 62;
    Uuid::from_random(b)
}

pub fn mem_disks(n: usize, mib: usize) -> Vec<MemDisk> {
    (0..n)
        .map(|i| MemDisk {
            data: vec![0; mib << 20],
            path: format!("/dev/mem{i}").into(),
        })
        .collect()
}

pub fn scan_mem(disks: &[MemDisk]) -> Scan {
    let refs: Vec<&dyn Disk> = disks.iter().map(|d| d as &dyn Disk).collect();
    scan_disks(&refs)
}

pub fn apply_all(disks: &mut [MemDisk], writes: &[Write]) {
    let mut refs: Vec<Option<&mut dyn Disk>> =
        disks.iter_mut().map(|d| Some(d as &mut dyn Disk)).collect();
    session::execute(&mut refs, writes).unwrap();
}

pub fn small_layout() -> PvLayout {
    PvLayout {
        metadata_size: Some(32 << 10),
        copies: 2,
        data_alignment: 64 << 10,
    }
}

pub fn pvcreate_mem(disks: &mut [MemDisk], which: &[usize]) {
    for &i in which {
        let (label, mdas) = pv_vg::new_pv_label(
            disks[i].data.len() as u64,
            small_layout(),
            uuid(100 + i as u8),
        )
        .unwrap();
        let w = pv_vg::pvcreate_writes(i, &label, &mdas).unwrap();
        apply_all(disks, &w);
    }
}

pub fn new_lv(name: &str, n: u8) -> NewLv {
    NewLv {
        name: name.into(),
        id: uuid(n),
        tags: vec!["t".into()],
        creation_time: 1,
        creation_host: "h".into(),
    }
}
