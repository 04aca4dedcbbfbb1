//! Any bytes as a whole device: scanning (label, mda headers, circular
//! buffer text, VG assembly) never panics.
#![no_main]
use ferrolvm::lvm::disk::MemDisk;
use ferrolvm::lvm::scan::scan_disks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk = MemDisk { data: data.to_vec(), path: "/dev/fuzz".into() };
    let scan = scan_disks(&[&disk]);
    for vg in &scan.assembly.vgs {
        let _ = vg.vg.validate();
    }
});
