//! Secure reuse of freed space on thick classes. DeleteVolume does not free
//! the extents: it deactivates the volume and, in one commit, renames it to
//! a wiping LV and replaces its CSI name tag with `ferrolvm.io/wiping=MODE`,
//! so the volume is gone for CSI while its extents stay allocated. A worker
//! then zeroes (or discards) the wiping LV and only then removes it. A crash
//! at any point leaves either the volume (delete again), or a wiping LV that
//! the next start wipes from the beginning; capacity never counts wiping
//! extents as free.

use std::sync::{mpsc, PoisonError};
use std::time::{Duration, Instant};

use ferrolvm_metadata::Vg;

use super::NodeEngine;
use crate::lvm::activate::{dm_name, mapper_path, Dm};
use crate::lvm::session::Session;
use crate::lvm::{disk, volumes, LvmError};
use crate::node::config::Wipe;
use crate::node::volume::{Volume, VolumeError};

/// Tag prefix of an LV whose extents are being wiped; the value is the mode.
pub const WIPE_TAG: &str = "ferrolvm.io/wiping=";
/// Name prefix of wiping LVs.
pub const WIPE_PREFIX: &str = "ferrolvm_wipe_";

/// Wiped LVs are freed in one commit at most this often during a pass:
/// capacity comes back within about this long of a wipe's end, and a storm
/// of deletes costs a commit per interval instead of one per volume.
const FREE_EVERY: Duration = Duration::from_secs(1);

/// A delete waiting for its VG's next retire commit.
pub(super) struct RetireJob {
    volume: Volume,
    mode: Wipe,
    reply: mpsc::Sender<Result<(), VolumeError>>,
}

/// Deactivates the job's LV and, in `vg` (the batch's model), renames it to
/// a wiping LV tagged with the job's mode. The same volume twice in one
/// batch (a retried delete) is retired once and both are answered; a
/// volume an earlier batch retired (the retry looked it up just before)
/// is gone, which is what the delete asked for: `Ok(false)`, nothing for
/// this batch's commit to do for it.
fn retire_one(s: &Session, dm: &Dm, vg: &mut Vg, job: &RetireJob) -> Result<bool, VolumeError> {
    let name = &job.volume.lv;
    let Some(lv) = s.vg.lv(name).cloned() else {
        return Ok(false);
    };
    if vg.lv(name).is_none() {
        // Renamed by an earlier job of this batch: answered with its commit.
        return Ok(true);
    }
    dm.deactivate(&s.vg, &lv).map_err(LvmError::from)?;
    let hidden = format!("{WIPE_PREFIX}{}", lv.id.dashed().replace('-', ""));
    ferrolvm_metadata::ops::rename_lv(vg, name, &hidden).map_err(LvmError::from)?;
    let tags = vec![format!("{WIPE_TAG}{}", job.mode.as_str())];
    match vg.lvs.iter_mut().find(|l| l.name == hidden) {
        Some(renamed) => renamed.tags = tags,
        None => return Err(LvmError::Refused(format!("{hidden} missing after its rename")).into()),
    }
    Ok(true)
}

/// The wiping LVs of `vg`, with their modes.
pub fn wiping(vg: &Vg) -> Vec<(String, Wipe, u64)> {
    let es = vg.extent_size as u64 * 512;
    vg.lvs
        .iter()
        .filter_map(|l| {
            let mode = l.tags.iter().find_map(|t| t.strip_prefix(WIPE_TAG))?;
            let mode = match mode {
                "discard" => Wipe::Discard,
                _ => Wipe::Zero,
            };
            Some((l.name.clone(), mode, l.extent_count() as u64 * es))
        })
        .collect()
}

impl NodeEngine {
    /// The VGs of this node's device classes, each once.
    pub(super) fn volume_groups(&self) -> Vec<&str> {
        let mut vgs: Vec<&str> = self
            .config
            .device_classes
            .iter()
            .map(|c| c.volume_group.as_str())
            .collect();
        vgs.sort();
        vgs.dedup();
        vgs
    }

    /// Takes volume `v` out of CSI's sight without freeing its extents.
    /// Group commit, as creates do: concurrent deletes of one VG queue up,
    /// and whoever takes the VG's commit lock retires all of them in one
    /// session — each deactivated, then one commit renaming each to a
    /// wiping LV tagged with its mode. The worker is woken.
    pub(super) fn retire(&self, volume: Volume, mode: Wipe) -> Result<(), VolumeError> {
        let queue = self.queue(&volume.vg);
        super::create::group_commit(
            &queue.retiring,
            &queue.commit,
            |reply| RetireJob {
                volume,
                mode,
                reply,
            },
            |jobs| self.retire_batch(jobs),
        )
    }

    /// One session for every job: deactivate each, rename and tag each in
    /// one model, commit once. A job that cannot be retired is answered
    /// with its error and left out of the commit; a failed commit fails
    /// every job in it (each volume stays, inactive, for the retried
    /// delete — the order a single delete always had).
    fn retire_batch(&self, jobs: Vec<RetireJob>) {
        let Some(first) = jobs.first() else { return };
        let vg_name = first.volume.vg.clone();
        let fail = |jobs: Vec<RetireJob>, e: VolumeError| {
            for j in jobs {
                let _ = j.reply.send(Err(e.share()));
            }
        };
        let dm = match volumes::activation_dm(&self.host) {
            Ok(dm) => dm,
            Err(e) => return fail(jobs, e.into()),
        };
        let mut s = match Session::open(&self.host, &vg_name) {
            Ok(s) => s,
            Err(e) => return fail(jobs, e.into()),
        };
        let mut vg = s.vg.clone();
        let mut retired = Vec::new();
        for job in jobs {
            match retire_one(&s, &dm, &mut vg, &job) {
                Ok(true) => retired.push(job),
                Ok(false) => {
                    let _ = job.reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if retired.is_empty() {
            return;
        }
        let mut names: Vec<&str> = retired.iter().map(|j| j.volume.name.as_str()).collect();
        names.dedup();
        let description = format!(
            "Write from ferrolvm: DeleteVolume {} (extents are wiped before they are freed).",
            names.join(", ")
        );
        match s.commit(vg, description) {
            Ok(()) => {
                for j in retired {
                    let _ = j.reply.send(Ok(()));
                }
            }
            Err(e) => return fail(retired, e.into()),
        }
        let (pending, wake) = &*self.wipe_signal;
        *pending.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }

    /// Wipes and removes every wiping LV on this node's VGs; returns how
    /// many were finished. Per VG, one session activates them all and the
    /// wiped ones are removed together, at most every [`FREE_EVERY`]. The
    /// first failure stops the pass (that LV stays, and its extents with
    /// it, for the next pass; the ones wiped before it are still freed).
    pub fn wipe_pending(&self) -> Result<usize, VolumeError> {
        let vgs = self.volume_groups();
        let mut done = 0;
        for vg_name in vgs {
            let pending = wiping(&self.read_vg(vg_name)?);
            if pending.is_empty() {
                continue;
            }
            let names: Vec<String> = pending.iter().map(|w| w.0.clone()).collect();
            volumes::set_active(&self.host, vg_name, Some(&names), true, true)?;
            let mut wiped: Vec<String> = Vec::new();
            let mut freed_at = Instant::now();
            let mut failure = None;
            for (lv, mode, bytes) in pending {
                let dev = mapper_path(&dm_name(vg_name, &lv, None));
                let result = match mode {
                    Wipe::Discard => disk::discard(&dev, 0, bytes),
                    _ => disk::zero_out(&dev, 0, bytes),
                };
                if let Err(e) = result {
                    failure = Some(VolumeError::Filesystem(format!(
                        "wiping {vg_name}/{lv} ({}): {e}",
                        dev.display()
                    )));
                    break;
                }
                tracing::info!(
                    vg = vg_name,
                    lv,
                    bytes,
                    mode = mode.as_str(),
                    "freed extents wiped"
                );
                wiped.push(lv);
                if freed_at.elapsed() >= FREE_EVERY {
                    done += self.free_wiped(vg_name, &mut wiped)?;
                    freed_at = Instant::now();
                }
            }
            done += self.free_wiped(vg_name, &mut wiped)?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
        Ok(done)
    }

    /// Removes the wiped LVs of `vg` in one commit; returns how many.
    fn free_wiped(&self, vg: &str, wiped: &mut Vec<String>) -> Result<usize, VolumeError> {
        if wiped.is_empty() {
            return Ok(0);
        }
        let description = format!(
            "Write from ferrolvm: {} wiped volume(s) freed.",
            wiped.len()
        );
        volumes::remove_plain(&self.host, vg, wiped, description)?;
        Ok(std::mem::take(wiped).len())
    }

    /// Bytes of this node's VGs held by wiping LVs (not yet free).
    pub fn wipe_backlog(&self) -> Result<u64, VolumeError> {
        let vgs = self.volume_groups();
        let mut total = 0;
        for vg in vgs {
            total += wiping(&self.read_vg(vg)?).iter().map(|w| w.2).sum::<u64>();
        }
        Ok(total)
    }

    /// The worker: a pass at start (a crash may have left wiping LVs), then
    /// one whenever a delete retires a volume, and every `every` anyway. It
    /// runs until the engine is dropped.
    pub fn run_wiper(self: &std::sync::Arc<Self>, every: Duration) -> std::thread::JoinHandle<()> {
        let weak = std::sync::Arc::downgrade(self);
        let signal = self.wipe_signal.clone();
        std::thread::spawn(move || loop {
            let Some(engine) = weak.upgrade() else { return };
            match engine.wipe_pending() {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "wiping pass done"),
                Err(e) => tracing::warn!(%e, "wiping pass failed; retrying later"),
            }
            drop(engine);
            let (pending, wake) = &*signal;
            let guard = pending.lock().unwrap_or_else(|p| p.into_inner());
            let (mut guard, _) = wake
                .wait_timeout_while(guard, every, |p| !*p)
                .unwrap_or_else(|p| p.into_inner());
            *guard = false;
        })
    }
}
