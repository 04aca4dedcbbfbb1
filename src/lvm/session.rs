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
use ferrolvm_metadata::label::PvLabel;
use ferrolvm_metadata::scan::FoundVg;
use ferrolvm_metadata::{Trailer, Uuid, Vg};

use crate::lvm::disk::{BlockDisk, Disk};
use crate::lvm::host::Host;
use crate::lvm::lock::{LvmLock, Mode};
use crate::lvm::scan::{scan_paths, Scan};
use crate::lvm::{LvmError, Result};

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LvmError + '_ {
    move |source| LvmError::Io {
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
                    LvmError::Refused(format!("device {} is not open for writing", w.dev))
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
                .unwrap_or_else(|_| Err(LvmError::Refused("flush thread panicked".into())))
        })?;
        mine
    })
}

/// Labels of PVs, with the index of the device they are on.
pub type Labels = Vec<(usize, PvLabel)>;

/// The mda headers and labels of the VG's PVs, as read by `scan`.
pub fn pv_state(scan: &Scan, vg: &Vg) -> Result<(Vec<PvMdas>, Labels)> {
    let by_uuid: BTreeMap<Uuid, usize> = scan
        .reads
        .iter()
        .map(|r| (r.label.pv_uuid, r.dev))
        .collect();
    let mut mdas = Vec::new();
    let mut labels = Vec::new();
    for pv in &vg.pvs {
        let dev = *by_uuid.get(&pv.id).ok_or_else(|| {
            LvmError::Refused(format!("PV {} of VG {} was not found", pv.id, vg.name))
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
    plan_vg_commit_text(scan, vg, prev_seqno, trailer).map(|(writes, _)| writes)
}

/// [`plan_vg_commit`], with the metadata text the writes commit.
fn plan_vg_commit_text(
    scan: &Scan,
    vg: &mut Vg,
    prev_seqno: u32,
    trailer: &Trailer,
) -> Result<(Vec<Write>, Vec<u8>)> {
    vg.seqno = prev_seqno
        .checked_add(1)
        .ok_or_else(|| LvmError::Refused("seqno overflow".into()))?;
    vg.validate()?;
    let text = vg.to_text(trailer);
    let (mdas, labels) = pv_state(scan, vg)?;
    let mut writes = commit::plan_commit(&mdas, &text)?;
    let stale: Vec<_> = labels.into_iter().filter(|(_, l)| !l.in_use()).collect();
    writes.extend(commit::plan_labels(&stale, true)?);
    Ok((writes, text))
}

/// Refuses VGs that must not be written, with the reason.
/// The VG `name` from `scan`, if ferrolvm may write it: present, writable,
/// its copies agreeing, no PV missing and no PV on two devices.
pub fn writable_vg<'s>(scan: &'s Scan, name: &str) -> Result<&'s FoundVg> {
    let found = scan
        .vg(name)
        .ok_or_else(|| LvmError::VgNotFound(name.into()))?;
    found.vg.check_writable(None)?;
    if found.has_mismatch() {
        return Err(LvmError::Inconsistent {
            vg: found.vg.name.clone(),
            why: "two metadata copies share a seqno but differ".into(),
        });
    }
    if !found.missing_pvs.is_empty() {
        return Err(LvmError::Refused(format!(
            "VG {} is missing PV {}",
            found.vg.name, found.missing_pvs[0]
        )));
    }
    if let Some((pv, devs)) = found.duplicate_pvs.first() {
        return Err(LvmError::DuplicatePv {
            vg: found.vg.name.clone(),
            pv: pv.dashed(),
            devices: devs.iter().map(|&d| scan.path_of(d)).collect(),
        });
    }
    Ok(found)
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

/// A lock error, with a timeout told apart: the caller may retry later.
pub fn lock_error(host: &Host, name: String) -> impl FnOnce(io::Error) -> LvmError {
    let waited = host.lock_wait;
    move |source| match (source.kind(), waited) {
        (io::ErrorKind::TimedOut, Some(waited)) => LvmError::LockTimeout { name, waited },
        _ => LvmError::Lock { name, source },
    }
}

pub(crate) fn lock_global(host: &Host) -> Result<LvmLock> {
    LvmLock::global(&host.lock_dir, Mode::Exclusive, host.lock_wait)
        .map_err(lock_error(host, "P_global".into()))
}

pub fn lock_vg(host: &Host, vg: &str, mode: Mode) -> Result<LvmLock> {
    LvmLock::vg(&host.lock_dir, vg, mode, host.lock_wait)
        .map_err(lock_error(host, format!("V_{vg}")))
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
        let found = writable_vg(&scan, name)?;
        let vg = found.vg.clone();
        Ok(Session {
            host,
            scan,
            vg,
            _lock: lock,
        })
    }

    /// Commits `vg` as the successor of the current state. The mda headers
    /// have moved on, so the session's scan must too: it is updated from the
    /// plan (what was just written and flushed, under the lock that keeps
    /// every other writer out), not reread from the devices, except when
    /// the commit rewrote labels or `Host::reread_after_commit` asks for it.
    pub fn commit(&mut self, mut vg: Vg, description: String) -> Result<()> {
        let started = std::time::Instant::now();
        let (writes, text) = plan_vg_commit_text(
            &self.scan,
            &mut vg,
            self.vg.seqno,
            &trailer(self.host, description),
        )?;
        execute_on_scan(&self.scan, &writes)?;
        // The writes are on disk now: a plan after_commit cannot model (or
        // a bug in it) must not fail the commit, so anything but Ok(true)
        // rereads, and the seqno check below still holds either way.
        let computed = !self.host.reread_after_commit
            && commit::after_commit(&mut self.scan.reads, &writes, &text).unwrap_or(false);
        if computed {
            self.scan.assembly = ferrolvm_metadata::scan::assemble(&self.scan.reads);
        } else {
            let paths: Vec<PathBuf> = self.scan.devices.iter().map(|d| d.path.clone()).collect();
            self.scan = scan_paths(&paths);
        }
        let now = self.scan.vg(&vg.name).map(|f| f.vg.seqno);
        if now != Some(vg.seqno) {
            return Err(LvmError::Refused(format!(
                "VG {} reads back with seqno {now:?} after committing {}",
                vg.name, vg.seqno
            )));
        }
        super::stats::commit_took(&vg.name, started.elapsed());
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
