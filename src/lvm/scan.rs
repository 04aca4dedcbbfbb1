//! Reading labels, mda headers and metadata texts from devices and handing
//! them to the metadata crate's assembler.

use std::path::PathBuf;

use ferrolvm_metadata::label::{PvLabel, LABEL_SCAN_SIZE};
use ferrolvm_metadata::mda::MdaHeader;
use ferrolvm_metadata::scan::{self as mscan, Assembly, DeviceRead, FoundVg, MdaRead};
use ferrolvm_metadata::SECTOR;

use crate::lvm::disk::{BlockDisk, Disk};

/// One device as seen by the scan.
#[derive(Debug, Clone)]
pub struct Device {
    pub path: PathBuf,
    pub size: u64,
    pub label: Option<PvLabel>,
    /// Why the device could not be read, or its label is damaged.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub devices: Vec<Device>,
    pub reads: Vec<DeviceRead>,
    pub assembly: Assembly,
}

impl Scan {
    pub fn vg(&self, name: &str) -> Option<&FoundVg> {
        self.assembly.vgs.iter().find(|v| v.vg.name == name)
    }

    pub fn device_index(&self, path: &std::path::Path) -> Option<usize> {
        let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.devices.iter().position(|d| {
            d.path == path
                || std::fs::canonicalize(&d.path)
                    .map(|c| c == want)
                    .unwrap_or(false)
        })
    }

    pub fn path_of(&self, dev: usize) -> String {
        self.devices[dev].path.display().to_string()
    }
}

/// Reads what LVM needs from one device.
pub fn read_device(disk: &dyn Disk, dev: usize) -> (Device, Option<DeviceRead>) {
    let mut d = Device {
        path: disk.path().to_path_buf(),
        size: disk.size(),
        label: None,
        error: None,
    };
    if disk.size() < LABEL_SCAN_SIZE as u64 {
        return (d, None);
    }
    let head = match disk.read_at(0, LABEL_SCAN_SIZE) {
        Ok(h) => h,
        Err(e) => {
            d.error = Some(e.to_string());
            return (d, None);
        }
    };
    let label = match PvLabel::find(&head) {
        Ok(Some(l)) => l,
        Ok(None) => return (d, None),
        Err(e) => {
            d.error = Some(e.to_string());
            return (d, None);
        }
    };
    let mut mdas = Vec::new();
    for m in &label.metadata_areas {
        let header = disk
            .read_at(m.offset, SECTOR)
            .map_err(|e| ferrolvm_metadata::Error::Request(format!("reading mda header: {e}")))
            .and_then(|b| MdaHeader::decode(&b, m.offset));
        let text = match &header {
            Ok(h) if !h.slots[0].is_empty() && !h.ignored() => Some(read_text(disk, h)),
            _ => None,
        };
        mdas.push(MdaRead {
            start: m.offset,
            header,
            text,
        });
    }
    d.label = Some(label.clone());
    (d, Some(DeviceRead { dev, label, mdas }))
}

fn read_text(disk: &dyn Disk, h: &MdaHeader) -> Result<Vec<u8>, ferrolvm_metadata::Error> {
    let slot = h.slots[0];
    let mut text = Vec::with_capacity(slot.size as usize);
    for (off, len) in h.text_ranges(&slot) {
        if len > 0 {
            let part = disk.read_at(off, len as usize).map_err(|e| {
                ferrolvm_metadata::Error::Request(format!("reading metadata text: {e}"))
            })?;
            text.extend_from_slice(&part);
        }
    }
    MdaHeader::verify_text(&slot, &[&text])?;
    Ok(text)
}

/// Scans already-open disks (tests use in-memory ones).
pub fn scan_disks(disks: &[&dyn Disk]) -> Scan {
    let mut s = Scan::default();
    for (i, disk) in disks.iter().enumerate() {
        let (d, r) = read_device(*disk, i);
        s.devices.push(d);
        s.reads.extend(r);
    }
    s.assembly = mscan::assemble(&s.reads);
    s
}

/// Scans device paths; unreadable ones are recorded, not fatal.
pub fn scan_paths(paths: &[PathBuf]) -> Scan {
    let mut opened: Vec<Result<BlockDisk, (PathBuf, String)>> = Vec::new();
    for p in paths {
        opened.push(BlockDisk::open(p, false).map_err(|e| (p.clone(), e.to_string())));
    }
    let mut s = Scan::default();
    for (i, o) in opened.iter().enumerate() {
        match o {
            Ok(disk) => {
                let (d, r) = read_device(disk, i);
                s.devices.push(d);
                s.reads.extend(r);
            }
            Err((p, e)) => s.devices.push(Device {
                path: p.clone(),
                size: 0,
                label: None,
                error: Some(e.clone()),
            }),
        }
    }
    s.assembly = mscan::assemble(&s.reads);
    s
}
