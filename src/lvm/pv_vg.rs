//! PV and VG lifecycle: `pvcreate`, `vgcreate`, `vgextend`, `vgremove`
//! and `vgck --updatemetadata`, each in the order that keeps a crash safe
//! (labels after metadata on create, PV_EXT_USED cleared before wiping on
//! remove).

use std::path::{Path, PathBuf};

use ferrolvm_metadata::commit::{self, Phase, Write};
use ferrolvm_metadata::label::{DiskLocn, PvLabel, DEFAULT_LABEL_SECTOR, PV_EXT_VERSION};
use ferrolvm_metadata::mda::MdaHeader;
use ferrolvm_metadata::ops::NewPv;
use ferrolvm_metadata::{Uuid, Vg};

use crate::lvm::host::Host;
use crate::lvm::lock::Mode;
use crate::lvm::scan::{scan_paths, Scan};
use crate::lvm::session::{
    execute_on_scan, lock_global, lock_vg, plan_vg_commit, pv_state, random_uuid, trailer,
    writable_vg,
};
use crate::lvm::{LvmError, Result};

/// How `pvcreate` lays out a new PV.
#[derive(Debug, Clone, Copy)]
pub struct PvLayout {
    /// Requested size of each metadata area in bytes (`--metadatasize`).
    pub metadata_size: Option<u64>,
    /// 0, 1 or 2 (`--pvmetadatacopies`).
    pub copies: u32,
    /// pe_start and the second mda are aligned to this (`--dataalignment`, default 1 MiB).
    pub data_alignment: u64,
}

impl Default for PvLayout {
    fn default() -> Self {
        PvLayout {
            metadata_size: None,
            copies: 1,
            data_alignment: MIB,
        }
    }
}

const MIB: u64 = 1 << 20;
const MDA0_START: u64 = 4096;

/// The label and fresh mda headers for a new PV on a device of `size` bytes.
pub fn new_pv_label(size: u64, layout: PvLayout, id: Uuid) -> Result<(PvLabel, Vec<MdaHeader>)> {
    if layout.copies > 2 {
        return Err(LvmError::Refused(
            "--pvmetadatacopies must be 0, 1 or 2".into(),
        ));
    }
    let mda_min = 32 * 1024;
    let align = layout.data_alignment;
    if align < 4096 || !align.is_multiple_of(4096) {
        return Err(LvmError::Refused(
            "--dataalignment must be a multiple of 4 KiB".into(),
        ));
    }
    // Like lvm2: the first mda fills the gap up to the aligned data start.
    let pe_start =
        (MDA0_START + layout.metadata_size.unwrap_or(mda_min).max(mda_min)).div_ceil(align) * align;
    let mda0_size = pe_start - MDA0_START;
    let mut mdas = Vec::new();
    if layout.copies >= 1 {
        mdas.push(MdaHeader::empty(MDA0_START, mda0_size, false));
    }
    if layout.copies == 2 {
        let start = size.saturating_sub(mda0_size) / align * align;
        if start <= pe_start {
            return Err(LvmError::Refused(format!(
                "device of {size} bytes is too small for two metadata areas"
            )));
        }
        mdas.push(MdaHeader::empty(start, size - start, false));
    }
    let data_end = mdas.get(1).map_or(size, |m| m.start);
    if data_end < pe_start + align.min(MIB) {
        return Err(LvmError::Refused(format!(
            "device of {size} bytes is too small for a PV"
        )));
    }
    let label = PvLabel {
        sector: DEFAULT_LABEL_SECTOR,
        pv_uuid: id,
        device_size: size,
        data_areas: vec![DiskLocn {
            offset: pe_start,
            size: 0,
        }],
        metadata_areas: mdas
            .iter()
            .map(|m| DiskLocn {
                offset: m.start,
                size: m.size,
            })
            .collect(),
        ext_version: PV_EXT_VERSION,
        ext_flags: 0,
        bootloader_areas: vec![],
    };
    Ok((label, mdas))
}

/// Writes that turn a device into an orphan PV: mda headers (each after a
/// zeroed first 4 KiB) and only then the label, so a crash leaves either no
/// PV or a complete one.
pub fn pvcreate_writes(dev: usize, label: &PvLabel, mdas: &[MdaHeader]) -> Result<Vec<Write>> {
    let mut writes = Vec::new();
    for m in mdas {
        let mut area = vec![0u8; 4096];
        area[..512].copy_from_slice(&m.encode());
        writes.push(Write {
            dev,
            offset: m.start,
            data: area,
            phase: Phase::Commit,
        });
    }
    let mut head = vec![0u8; 2048];
    let s = (label.sector as usize) * 512;
    head[s..s + 512].copy_from_slice(&label.encode()?);
    writes.push(Write {
        dev,
        offset: 0,
        data: head,
        phase: Phase::Label,
    });
    Ok(writes)
}

/// The `NewPv` view of a scanned orphan PV.
pub fn new_pv_of(scan: &Scan, dev: usize) -> Result<NewPv> {
    let read = scan
        .reads
        .iter()
        .find(|r| r.dev == dev)
        .ok_or_else(|| LvmError::Refused(format!("{} is not a PV", scan.path_of(dev))))?;
    let l = &read.label;
    let pe_start = l
        .pe_start()
        .ok_or_else(|| LvmError::Refused(format!("{} has no data area", scan.path_of(dev))))?;
    let size = scan.devices[dev].size;
    let data_end = l
        .metadata_areas
        .iter()
        .map(|m| m.offset)
        .filter(|&o| o > pe_start)
        .min()
        .unwrap_or(size);
    Ok(NewPv {
        id: l.pv_uuid,
        device: scan.path_of(dev),
        dev_size: size / 512,
        pe_start: pe_start / 512,
        data_sectors: data_end.saturating_sub(pe_start) / 512,
    })
}

fn in_some_vg(scan: &Scan, dev: usize) -> Option<&str> {
    scan.assembly
        .vgs
        .iter()
        .find(|v| v.pv_devs.values().any(|&d| d == dev))
        .map(|v| v.vg.name.as_str())
}

/// Initialises devices as PVs. Caller holds P_global.
fn pvcreate_locked(
    host: &Host,
    paths: &[PathBuf],
    layout: PvLayout,
    force: bool,
) -> Result<Vec<Uuid>> {
    let mut cands = host.candidate_devices();
    for p in paths {
        if !cands.contains(p) {
            cands.push(p.clone());
        }
    }
    let scan = scan_paths(&cands);
    let mut writes = Vec::new();
    let mut ids = Vec::new();
    for p in paths {
        let dev = scan
            .device_index(p)
            .ok_or_else(|| LvmError::Refused(format!("cannot open {}", p.display())))?;
        let d = &scan.devices[dev];
        if let Some(e) = &d.error {
            if d.size == 0 || !force {
                return Err(LvmError::Refused(format!("{}: {e}", p.display())));
            }
        }
        if let Some(vg) = in_some_vg(&scan, dev) {
            return Err(LvmError::Refused(format!(
                "{} is already in volume group {vg}",
                p.display()
            )));
        }
        let id = random_uuid();
        let (label, mdas) = new_pv_label(d.size, layout, id)?;
        writes.extend(pvcreate_writes(dev, &label, &mdas)?);
        ids.push(id);
    }
    execute_on_scan(&scan, &writes)?;
    let entries: Vec<(PathBuf, Uuid)> = paths.iter().cloned().zip(ids.iter().copied()).collect();
    host.add_to_devices_file(&entries)
        .map_err(|source| LvmError::Io {
            path: "devices file".into(),
            source,
        })?;
    host.invalidate_hints();
    Ok(ids)
}

pub fn pvcreate(
    host: &Host,
    paths: &[PathBuf],
    layout: PvLayout,
    force: bool,
) -> Result<Vec<Uuid>> {
    let _g = lock_global(host)?;
    pvcreate_locked(host, paths, layout, force)
}

/// Scans with `paths` added to the candidates, and makes PVs of any that are not.
fn ensure_pvs(host: &Host, paths: &[PathBuf], layout: PvLayout) -> Result<Scan> {
    let mut cands = host.candidate_devices();
    for p in paths {
        if !cands.contains(p) {
            cands.push(p.clone());
        }
    }
    let scan = scan_paths(&cands);
    let fresh: Vec<PathBuf> = paths
        .iter()
        .filter(|p| {
            scan.device_index(p)
                .map(|d| scan.devices[d].label.is_none())
                .unwrap_or(true)
        })
        .cloned()
        .collect();
    if fresh.is_empty() {
        return Ok(scan);
    }
    pvcreate_locked(
        &Host {
            devices: Some(cands.clone()),
            ..host.clone()
        },
        &fresh,
        layout,
        false,
    )?;
    Ok(scan_paths(&cands))
}

fn orphans(scan: &Scan, paths: &[PathBuf]) -> Result<Vec<NewPv>> {
    paths
        .iter()
        .map(|p| {
            let dev = scan
                .device_index(p)
                .ok_or_else(|| LvmError::Refused(format!("cannot open {}", p.display())))?;
            if let Some(vg) = in_some_vg(scan, dev) {
                return Err(LvmError::Refused(format!(
                    "physical volume {} is already in volume group {vg}",
                    p.display()
                )));
            }
            new_pv_of(scan, dev)
        })
        .collect()
}

pub fn vgcreate(
    host: &Host,
    name: &str,
    paths: &[PathBuf],
    extent_size: u32,
    tags: Vec<String>,
    layout: PvLayout,
) -> Result<Vg> {
    ferrolvm_metadata::names::check_vg_name(name)?;
    let _g = lock_global(host)?;
    let _v = lock_vg(host, name, Mode::Exclusive)?;
    let scan = ensure_pvs(host, paths, layout)?;
    if scan.vg(name).is_some() {
        return Err(LvmError::Refused(format!(
            "a volume group called {name} already exists"
        )));
    }
    if Path::new("/dev").join(name).exists() {
        return Err(LvmError::Refused(format!("/dev/{name} already exists")));
    }
    let pvs = orphans(&scan, paths)?;
    let mut vg = ferrolvm_metadata::ops::new_vg(name, random_uuid(), extent_size, &pvs, tags)?;
    let writes = plan_vg_commit(
        &scan,
        &mut vg,
        0,
        &trailer(host, format!("Write from ferrolvm vgcreate {name}.")),
    )?;
    execute_on_scan(&scan, &writes)?;
    host.invalidate_hints();
    Ok(vg)
}

pub fn vgextend(host: &Host, name: &str, paths: &[PathBuf], layout: PvLayout) -> Result<Vg> {
    let _g = lock_global(host)?;
    let _v = lock_vg(host, name, Mode::Exclusive)?;
    let scan = ensure_pvs(host, paths, layout)?;
    let found = writable_vg(&scan, name)?;
    let pvs = orphans(&scan, paths)?;
    let mut vg = found.vg.clone();
    ferrolvm_metadata::ops::add_pvs(&mut vg, &pvs)?;
    let writes = plan_vg_commit(
        &scan,
        &mut vg,
        found.vg.seqno,
        &trailer(host, format!("Write from ferrolvm vgextend {name}.")),
    )?;
    execute_on_scan(&scan, &writes)?;
    host.invalidate_hints();
    Ok(vg)
}

/// Removes a VG: labels lose PV_EXT_USED first (a crash there leaves the VG,
/// which lvm2 reads and repairs), then the mda slots are cleared.
pub fn vgremove(host: &Host, name: &str, force: bool) -> Result<()> {
    let _g = lock_global(host)?;
    let _v = lock_vg(host, name, Mode::Exclusive)?;
    let scan = scan_paths(&host.candidate_devices());
    let found = writable_vg(&scan, name)?;
    if found.vg.visible_lv_count() > 0 && !force {
        return Err(LvmError::Refused(format!(
            "volume group {name} still contains {} logical volume(s); use -f to remove them too",
            found.vg.visible_lv_count()
        )));
    }
    if found.vg.lvs.iter().any(|l| !l.managed()) {
        return Err(LvmError::Refused(format!("volume group {name} has logical volumes ferrolvm does not manage; remove them with lvm2 first")));
    }
    if let Some(dm) = crate::lvm::activate::Dm::for_host(host)? {
        deactivate_all(&dm, &found.vg)?;
    }
    let (mdas, labels) = pv_state(&scan, &found.vg)?;
    execute_on_scan(&scan, &commit::plan_labels(&labels, false)?)?;
    execute_on_scan(&scan, &commit::plan_wipe(&mdas))?;
    host.invalidate_hints();
    Ok(())
}

/// Deactivates every LV of `vg` in the order lvm2's `vgchange -an` uses:
/// thin LVs, then thin pools with all their layers, then the rest.
fn deactivate_all(dm: &crate::lvm::activate::Dm, vg: &Vg) -> Result<()> {
    use ferrolvm_metadata::ThinSegment;
    let thin =
        |l: &&ferrolvm_metadata::Lv| l.segments.first().and_then(|s| s.thin.as_ref()).cloned();
    for lv in vg
        .lvs
        .iter()
        .filter(|l| matches!(thin(l), Some(ThinSegment::Thin { .. })))
    {
        dm.deactivate(vg, lv)?;
    }
    for pool in vg
        .lvs
        .iter()
        .filter(|l| matches!(thin(l), Some(ThinSegment::Pool { .. })))
    {
        dm.deactivate_pool_if_unused(vg, &pool.name)?;
    }
    for lv in vg
        .lvs
        .iter()
        .filter(|l| thin(l).is_none() && dm.is_active(vg, l))
    {
        dm.deactivate(vg, lv)?;
    }
    Ok(())
}

/// Rewrites every mda of a VG with its newest metadata (vgck --updatemetadata).
pub fn update_metadata(host: &Host, name: &str) -> Result<Vg> {
    let _v = lock_vg(host, name, Mode::Exclusive)?;
    let scan = scan_paths(&host.candidate_devices());
    let found = scan
        .vg(name)
        .ok_or_else(|| LvmError::VgNotFound(name.into()))?;
    found.vg.check_writable(None)?;
    let mut vg = found.vg.clone();
    let writes = plan_vg_commit(
        &scan,
        &mut vg,
        found.vg.seqno,
        &trailer(
            host,
            format!("Write from ferrolvm vgck --updatemetadata {name}."),
        ),
    )?;
    execute_on_scan(&scan, &writes)?;
    Ok(vg)
}
