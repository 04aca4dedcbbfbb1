//! VG changes end to end: lock, scan, check, change the model, plan, write.
//!
//! Every change follows the commit order documented in
//! `ferrolvm_metadata::commit`; this module adds the locking around it and
//! the flush barrier between phases.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrolvm_metadata::commit::{self, Phase, PvMdas, Write};
use ferrolvm_metadata::label::{DiskLocn, PvLabel, DEFAULT_LABEL_SECTOR, PV_EXT_VERSION};
use ferrolvm_metadata::mda::MdaHeader;
use ferrolvm_metadata::ops::NewPv;
use ferrolvm_metadata::scan::FoundVg;
use ferrolvm_metadata::{Trailer, Uuid, Vg};

use crate::disk::{BlockDisk, Disk};
use crate::host::Host;
use crate::lock::{LvmLock, Mode};
use crate::scan::{scan_paths, Scan};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Metadata(#[from] ferrolvm_metadata::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("taking lvm lock {name}: {source}")]
    Lock { name: String, source: io::Error },
    #[error("volume group \"{0}\" not found")]
    VgNotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "VG {vg} metadata is inconsistent ({why}); repair it with `vgck --updatemetadata {vg}`"
    )]
    Inconsistent { vg: String, why: String },
    #[error(transparent)]
    Activate(#[from] crate::activate::ActivateError),
    #[error("{cause}; undoing it also failed: {rollback}")]
    Rollback {
        cause: Box<EngineError>,
        rollback: Box<EngineError>,
    },
}

impl EngineError {
    /// lvm2's exit codes: 5 for a failed command, 3 for invalid arguments.
    pub fn exit_code(&self) -> i32 {
        5
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn random_uuid() -> Uuid {
    let mut b = [0u8; 32];
    // A uuid from a failed getrandom would collide; there is no sane fallback.
    getrandom::fill(&mut b).expect("getrandom failed");
    Uuid::from_random(b)
}

pub fn trailer(host: &Host, description: String) -> Trailer {
    Trailer {
        generator: concat!("ferrolvm ", env!("CARGO_PKG_VERSION")).into(),
        description,
        creation_host: host.hostname.clone(),
        uname: host.uname.clone(),
        creation_time: now(),
    }
}

/// Performs writes barrier group by barrier group (see
/// `ferrolvm_metadata::commit::Phase::barrier`): every write of a group is
/// issued, then every device it touched is flushed, in parallel, before the
/// next group starts. Stops at the first error; what was written so far is a
/// state the commit order makes safe.
pub fn execute(disks: &mut [Option<&mut dyn Disk>], writes: &[Write]) -> Result<()> {
    for group in 0..=Phase::Label.barrier() {
        let mut touched = vec![false; disks.len()];
        for w in writes.iter().filter(|w| w.phase.barrier() == group) {
            let disk = disks
                .get_mut(w.dev)
                .and_then(|d| d.as_deref_mut())
                .ok_or_else(|| {
                    EngineError::Refused(format!("device {} is not open for writing", w.dev))
                })?;
            disk.write_at(w.offset, &w.data)
                .map_err(io_err(disk.path()))?;
            touched[w.dev] = true;
        }
        flush_all(
            disks
                .iter_mut()
                .zip(touched)
                .filter(|(_, t)| *t)
                .filter_map(|(d, _)| d.as_deref_mut())
                .collect(),
        )?;
    }
    Ok(())
}

/// Flushes devices concurrently: a flush waits on the device, so N devices
/// cost one flush latency instead of N.
fn flush_all<'a, 'b>(disks: Vec<&'a mut (dyn Disk + 'b)>) -> Result<()> {
    if disks.len() <= 1 {
        for d in disks {
            let p = d.path().to_path_buf();
            d.flush().map_err(io_err(&p))?;
        }
        return Ok(());
    }
    let mut disks = disks;
    let last = disks.pop().expect("more than one disk");
    std::thread::scope(|s| {
        let handles: Vec<_> = disks
            .into_iter()
            .map(|d| {
                s.spawn(move || {
                    let p = d.path().to_path_buf();
                    d.flush().map_err(io_err(&p))
                })
            })
            .collect();
        let p = last.path().to_path_buf();
        let mine = last.flush().map_err(io_err(&p));
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(EngineError::Refused("flush thread panicked".into())))
        })?;
        mine
    })
}

/// Labels of PVs, with the index of the device they are on.
type Labels = Vec<(usize, PvLabel)>;

/// The mda headers and labels of the VG's PVs, as read by `scan`.
fn pv_state(scan: &Scan, vg: &Vg) -> Result<(Vec<PvMdas>, Labels)> {
    let by_uuid: BTreeMap<Uuid, usize> = scan
        .reads
        .iter()
        .map(|r| (r.label.pv_uuid, r.dev))
        .collect();
    let mut mdas = Vec::new();
    let mut labels = Vec::new();
    for pv in &vg.pvs {
        let dev = *by_uuid.get(&pv.id).ok_or_else(|| {
            EngineError::Refused(format!("PV {} of VG {} was not found", pv.id, vg.name))
        })?;
        let read = scan
            .reads
            .iter()
            .find(|r| r.dev == dev)
            .expect("dev came from reads");
        mdas.push(PvMdas {
            dev,
            mdas: read
                .mdas
                .iter()
                .filter_map(|m| m.header.clone().ok())
                .collect(),
        });
        labels.push((dev, read.label.clone()));
    }
    Ok((mdas, labels))
}

/// Plans the commit of `vg` as the successor of `prev_seqno`.
pub fn plan_vg_commit(
    scan: &Scan,
    vg: &mut Vg,
    prev_seqno: u32,
    trailer: &Trailer,
) -> Result<Vec<Write>> {
    vg.seqno = prev_seqno
        .checked_add(1)
        .ok_or_else(|| EngineError::Refused("seqno overflow".into()))?;
    vg.validate()?;
    let text = vg.to_text(trailer);
    let (mdas, labels) = pv_state(scan, vg)?;
    let mut writes = commit::plan_commit(&mdas, &text)?;
    let stale: Vec<_> = labels.into_iter().filter(|(_, l)| !l.in_use()).collect();
    writes.extend(commit::plan_labels(&stale, true)?);
    Ok(writes)
}

/// Refuses VGs that must not be written, with the reason.
pub fn check_found(found: &FoundVg) -> Result<()> {
    found.vg.check_writable(None)?;
    if found.has_mismatch() {
        return Err(EngineError::Inconsistent {
            vg: found.vg.name.clone(),
            why: "two metadata copies share a seqno but differ".into(),
        });
    }
    if !found.missing_pvs.is_empty() {
        return Err(EngineError::Refused(format!(
            "VG {} is missing PV {}",
            found.vg.name, found.missing_pvs[0]
        )));
    }
    Ok(())
}

/// Opens, read-write, every device the writes touch.
fn open_for(scan: &Scan, writes: &[Write]) -> Result<Vec<Option<BlockDisk>>> {
    let mut out: Vec<Option<BlockDisk>> = (0..scan.devices.len()).map(|_| None).collect();
    for w in writes {
        if out[w.dev].is_none() {
            let p = &scan.devices[w.dev].path;
            out[w.dev] = Some(BlockDisk::open(p, true).map_err(io_err(p))?);
        }
    }
    Ok(out)
}

pub fn execute_on_scan(scan: &Scan, writes: &[Write]) -> Result<()> {
    let mut disks = open_for(scan, writes)?;
    let mut refs: Vec<Option<&mut dyn Disk>> = disks
        .iter_mut()
        .map(|d| d.as_mut().map(|d| d as &mut dyn Disk))
        .collect();
    execute(&mut refs, writes)
}

fn lock_global(host: &Host) -> Result<LvmLock> {
    LvmLock::global(&host.lock_dir, Mode::Exclusive).map_err(|source| EngineError::Lock {
        name: "P_global".into(),
        source,
    })
}

pub fn lock_vg(host: &Host, vg: &str, mode: Mode) -> Result<LvmLock> {
    LvmLock::vg(&host.lock_dir, vg, mode).map_err(|source| EngineError::Lock {
        name: format!("V_{vg}"),
        source,
    })
}

/// A VG held under its exclusive lvm2 lock: the scan it was read from and
/// its committed state. Several commits (and activations between them) can
/// follow one another without another process interleaving.
pub struct Session<'h> {
    host: &'h Host,
    pub scan: Scan,
    pub vg: Vg,
    _lock: LvmLock,
}

impl<'h> Session<'h> {
    pub fn open(host: &'h Host, name: &str) -> Result<Session<'h>> {
        let lock = lock_vg(host, name, Mode::Exclusive)?;
        let scan = scan_paths(&host.candidate_devices());
        let found = scan
            .vg(name)
            .ok_or_else(|| EngineError::VgNotFound(name.into()))?;
        check_found(found)?;
        let vg = found.vg.clone();
        Ok(Session {
            host,
            scan,
            vg,
            _lock: lock,
        })
    }

    /// Commits `vg` as the successor of the current state, then re-reads the
    /// VG's devices: the mda headers have moved on.
    pub fn commit(&mut self, mut vg: Vg, description: String) -> Result<()> {
        let writes = plan_vg_commit(
            &self.scan,
            &mut vg,
            self.vg.seqno,
            &trailer(self.host, description),
        )?;
        execute_on_scan(&self.scan, &writes)?;
        let paths: Vec<PathBuf> = self.scan.devices.iter().map(|d| d.path.clone()).collect();
        self.scan = scan_paths(&paths);
        let now = self.scan.vg(&vg.name).map(|f| f.vg.seqno);
        if now != Some(vg.seqno) {
            return Err(EngineError::Refused(format!(
                "VG {} reads back with seqno {now:?} after committing {}",
                vg.name, vg.seqno
            )));
        }
        self.vg = vg;
        Ok(())
    }
}

/// Reads one VG under its lock, applies `change`, and commits the result.
/// `change` returns the description stored in the metadata.
pub fn modify_vg(
    host: &Host,
    name: &str,
    change: impl FnOnce(&mut Vg, &Scan) -> Result<String>,
) -> Result<Vg> {
    let mut s = Session::open(host, name)?;
    let mut vg = s.vg.clone();
    let description = change(&mut vg, &s.scan)?;
    s.commit(vg, description)?;
    Ok(s.vg)
}

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
        return Err(EngineError::Refused(
            "--pvmetadatacopies must be 0, 1 or 2".into(),
        ));
    }
    let mda_min = 32 * 1024;
    let align = layout.data_alignment;
    if align < 4096 || !align.is_multiple_of(4096) {
        return Err(EngineError::Refused(
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
            return Err(EngineError::Refused(format!(
                "device of {size} bytes is too small for two metadata areas"
            )));
        }
        mdas.push(MdaHeader::empty(start, size - start, false));
    }
    let data_end = mdas.get(1).map_or(size, |m| m.start);
    if data_end < pe_start + align.min(MIB) {
        return Err(EngineError::Refused(format!(
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
        .ok_or_else(|| EngineError::Refused(format!("{} is not a PV", scan.path_of(dev))))?;
    let l = &read.label;
    let pe_start = l
        .pe_start()
        .ok_or_else(|| EngineError::Refused(format!("{} has no data area", scan.path_of(dev))))?;
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
            .ok_or_else(|| EngineError::Refused(format!("cannot open {}", p.display())))?;
        let d = &scan.devices[dev];
        if let Some(e) = &d.error {
            if d.size == 0 || !force {
                return Err(EngineError::Refused(format!("{}: {e}", p.display())));
            }
        }
        if let Some(vg) = in_some_vg(&scan, dev) {
            return Err(EngineError::Refused(format!(
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
        .map_err(|source| EngineError::Io {
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
                .ok_or_else(|| EngineError::Refused(format!("cannot open {}", p.display())))?;
            if let Some(vg) = in_some_vg(scan, dev) {
                return Err(EngineError::Refused(format!(
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
        return Err(EngineError::Refused(format!(
            "a volume group called {name} already exists"
        )));
    }
    if Path::new("/dev").join(name).exists() {
        return Err(EngineError::Refused(format!("/dev/{name} already exists")));
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
    let found = scan
        .vg(name)
        .ok_or_else(|| EngineError::VgNotFound(name.into()))?;
    check_found(found)?;
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
    let found = scan
        .vg(name)
        .ok_or_else(|| EngineError::VgNotFound(name.into()))?;
    check_found(found)?;
    if found.vg.visible_lv_count() > 0 && !force {
        return Err(EngineError::Refused(format!(
            "volume group {name} still contains {} logical volume(s); use -f to remove them too",
            found.vg.visible_lv_count()
        )));
    }
    if found.vg.lvs.iter().any(|l| !l.managed()) {
        return Err(EngineError::Refused(format!("volume group {name} has logical volumes ferrolvm does not manage; remove them with lvm2 first")));
    }
    if let Ok(dm) = crate::activate::Dm::open() {
        for lv in found.vg.lvs.iter().filter(|l| dm.is_active(&found.vg, l)) {
            dm.deactivate(&found.vg, lv)?;
        }
    }
    let (mdas, labels) = pv_state(&scan, &found.vg)?;
    execute_on_scan(&scan, &commit::plan_labels(&labels, false)?)?;
    execute_on_scan(&scan, &commit::plan_wipe(&mdas))?;
    host.invalidate_hints();
    Ok(())
}

/// Rewrites every mda of a VG with its newest metadata (vgck --updatemetadata).
pub fn update_metadata(host: &Host, name: &str) -> Result<Vg> {
    let _v = lock_vg(host, name, Mode::Exclusive)?;
    let scan = scan_paths(&host.candidate_devices());
    let found = scan
        .vg(name)
        .ok_or_else(|| EngineError::VgNotFound(name.into()))?;
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
