//! Secure reuse of freed space on thick classes. DeleteVolume does not free
//! the extents: it deactivates the volume and, in one commit, renames it to
//! a wiping LV and replaces its CSI name tag with `ferrolvm.io/wiping=MODE`,
//! so the volume is gone for CSI while its extents stay allocated. A worker
//! then zeroes (or discards) the wiping LV and only then removes it. A crash
//! at any point leaves either the volume (delete again), or a wiping LV that
//! the next start wipes from the beginning; capacity never counts wiping
//! extents as free.

use std::time::Duration;

use ferrolvm_metadata::Vg;

use super::NodeEngine;
use crate::lvm::activate::{dm_name, mapper_path};
use crate::lvm::{disk, session, volumes, LvmError};
use crate::node::config::Wipe;
use crate::node::volume::{Volume, VolumeError};

/// Tag prefix of an LV whose extents are being wiped; the value is the mode.
pub const WIPE_TAG: &str = "ferrolvm.io/wiping=";
/// Name prefix of wiping LVs.
pub const WIPE_PREFIX: &str = "ferrolvm_wipe_";

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

    /// Takes volume `v` out of CSI's sight without freeing its extents:
    /// deactivate (waiting out a transient open), then one commit that
    /// renames it to a wiping LV tagged with `mode`. The worker is woken.
    pub(super) fn retire(&self, v: &Volume, mode: Wipe) -> Result<(), VolumeError> {
        volumes::set_active(
            &self.host,
            &v.vg,
            Some(std::slice::from_ref(&v.lv)),
            false,
            true,
        )?;
        session::modify_vg(&self.host, &v.vg, |vg, _| {
            let lv = vg
                .lv(&v.lv)
                .ok_or_else(|| LvmError::Refused(format!("volume {} vanished", v.name)))?;
            let hidden = format!("{WIPE_PREFIX}{}", lv.id.dashed().replace('-', ""));
            ferrolvm_metadata::ops::rename_lv(vg, &v.lv, &hidden)?;
            let lv = vg
                .lvs
                .iter_mut()
                .find(|l| l.name == hidden)
                .expect("just renamed");
            lv.tags = vec![format!("{WIPE_TAG}{}", mode.as_str())];
            Ok(format!(
                "Write from ferrolvm: DeleteVolume {} (its extents are wiped before they are freed).",
                v.name
            ))
        })?;
        let (pending, wake) = &*self.wipe_signal;
        *pending.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        Ok(())
    }

    /// Wipes and removes every wiping LV on this node's VGs; returns how
    /// many were finished. The first failure stops the pass (the LV stays,
    /// and its extents with it, for the next pass).
    pub fn wipe_pending(&self) -> Result<usize, VolumeError> {
        let vgs = self.volume_groups();
        let mut done = 0;
        for vg_name in vgs {
            let vg = self.read_vg(vg_name)?;
            for (lv, mode, bytes) in wiping(&vg) {
                let one = std::slice::from_ref(&lv);
                volumes::set_active(&self.host, vg_name, Some(one), true, true)?;
                let dev = mapper_path(&dm_name(vg_name, &lv, None));
                let wiped = match mode {
                    Wipe::Discard => disk::discard(&dev, 0, bytes),
                    _ => disk::zero_out(&dev, 0, bytes),
                };
                wiped.map_err(|e| {
                    VolumeError::Filesystem(format!(
                        "wiping {vg_name}/{lv} ({}): {e}",
                        dev.display()
                    ))
                })?;
                volumes::remove(&self.host, vg_name, &lv, false)?;
                tracing::info!(
                    vg = vg_name,
                    lv,
                    bytes,
                    mode = mode.as_str(),
                    "freed extents wiped"
                );
                done += 1;
            }
        }
        Ok(done)
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
