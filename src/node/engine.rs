//! The node engine: volumes keyed by their CSI name, on the device classes
//! of this node. It replaces TopoLVM's lvmd, in-process.
//!
//! - Idempotent: the CSI name is kept in an LV tag, so a retried or
//!   restarted create finds the volume it made instead of making a twin.
//! - Group commit (`create.rs`): concurrent creates on one VG queue up;
//!   whoever takes the VG's commit lock drains the queue and commits all of
//!   them at once, then activates each. Thin creates of one class share one
//!   pool transaction (its two commits).
//! - Snapshots and clones (`snapshots.rs`) on thin classes.
//! - Deleting a thick volume wipes its extents before they are freed
//!   (`wipe.rs`); concurrent deletes of one VG are retired in one commit,
//!   and the wiper frees what it wiped in one commit per second at most.

mod create;
pub mod report;
mod snapshots;
pub mod wipe;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use ferrolvm_metadata::Vg;

use super::config::{ClassType, DeviceClass, NodeConfig, Wipe};
use super::volume::{to_volume, Volume, VolumeError};
use crate::lvm::host::Host;
use crate::lvm::volumes;
use crate::lvm::LvmError;
use create::VgQueue;
pub use create::BATCH_SIZES;

pub struct NodeEngine {
    host: Host,
    pub config: NodeConfig,
    /// Publish targets must lie under one of these (kubelet's directory).
    pub publish_roots: Vec<PathBuf>,
    queues: Mutex<HashMap<String, Arc<VgQueue>>>,
    /// One publish or unpublish at a time per volume id.
    volume_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Set and signalled when a delete leaves extents to wipe.
    wipe_signal: Arc<(Mutex<bool>, Condvar)>,
}

/// Where kubelet keeps pods, and so publish targets, by default.
pub const KUBELET_DIR: &str = "/var/lib/kubelet";

impl NodeEngine {
    pub fn new(host: Host, config: NodeConfig) -> NodeEngine {
        NodeEngine {
            host,
            config,
            publish_roots: vec![PathBuf::from(KUBELET_DIR)],
            queues: Mutex::new(HashMap::new()),
            volume_locks: Mutex::new(HashMap::new()),
            wipe_signal: Arc::new((Mutex::new(false), Condvar::new())),
        }
    }

    /// The same engine, with publish targets allowed under `roots` instead.
    pub fn with_publish_roots(mut self, roots: Vec<PathBuf>) -> NodeEngine {
        self.publish_roots = roots;
        self
    }

    /// The lock that serialises publishing volume `id`.
    pub fn volume_lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.volume_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// A new LV as the engine makes them: a fresh uuid, now, this host.
    fn new_lv(&self, name: String, tags: Vec<String>) -> ferrolvm_metadata::ops::NewLv {
        ferrolvm_metadata::ops::NewLv {
            name,
            id: crate::lvm::session::random_uuid(),
            tags,
            creation_time: crate::lvm::session::now(),
            creation_host: self.host.hostname.clone(),
        }
    }

    /// The create queue and commit lock of one VG.
    fn queue(&self, vg: &str) -> Arc<VgQueue> {
        self.queues
            .lock()
            .expect("poisoned")
            .entry(vg.to_string())
            .or_default()
            .clone()
    }

    fn class(&self, name: Option<&str>) -> Result<DeviceClass, VolumeError> {
        self.config
            .class(name)
            .cloned()
            .ok_or_else(|| VolumeError::UnknownClass(name.unwrap_or("").to_string()))
    }

    fn read_vg(&self, vg: &str) -> Result<Vg, VolumeError> {
        let scan = crate::lvm::scan::scan_paths(&self.host.candidate_devices());
        Ok(scan
            .vg(vg)
            .ok_or_else(|| LvmError::VgNotFound(vg.into()))?
            .vg
            .clone())
    }

    /// All volumes ferrolvm made on this node's classes.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let mut out = Vec::new();
        for c in &self.config.device_classes {
            let vg = self.read_vg(&c.volume_group)?;
            out.extend(class_volumes(c, &vg));
        }
        Ok(out)
    }

    pub fn find(&self, id: &str) -> Result<Option<Volume>, VolumeError> {
        Ok(self.list()?.into_iter().find(|v| v.id == id))
    }

    /// The volume of `class` named `name` (its CSI name), from one read of
    /// the class's VG: for callers that address volumes by name, as
    /// TopoLVM's lvmd protocol does.
    pub fn find_named(
        &self,
        class: Option<&str>,
        name: &str,
    ) -> Result<Option<Volume>, VolumeError> {
        let c = self.class(class)?;
        let vg = self.read_vg(&c.volume_group)?;
        let found = class_volumes(&c, &vg).find(|v| v.name == name);
        Ok(found)
    }

    /// Bytes a new volume of `class` can get.
    pub fn capacity(&self, class: Option<&str>) -> Result<u64, VolumeError> {
        let c = self.class(class)?;
        Ok(c.capacity(&self.read_vg(&c.volume_group)?))
    }

    /// Room in `class` from one read of its VG: the bytes new volumes can
    /// get in all, and the largest single volume that can be made.
    pub fn room(&self, class: Option<&str>) -> Result<(u64, u64), VolumeError> {
        let c = self.class(class)?;
        let vg = self.read_vg(&c.volume_group)?;
        Ok((c.capacity(&vg), c.max_volume(&vg)))
    }

    /// The readiness check of a node: device-mapper usable, and every
    /// configured VG readable and writable by ferrolvm.
    pub fn probe(&self) -> Result<(), String> {
        self.host.filter.as_ref().map_err(|e| e.clone())?;
        crate::lvm::activate::Dm::open().map_err(|e| e.to_string())?;
        let scan = crate::lvm::scan::scan_paths(&self.host.candidate_devices());
        for c in &self.config.device_classes {
            let vg = &c.volume_group;
            let found = scan
                .vg(vg)
                .ok_or_else(|| format!("volume group {vg} not found"))?;
            found.vg.check_writable(None).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Start-up recovery of every thin class's pool: queued messages a crash
    /// left are replayed and thin LVs left suspended (a snapshot interrupted
    /// while its origin was suspended) are resumed. Returns what was resumed.
    pub fn recover(&self) -> Result<Vec<String>, VolumeError> {
        let mut resumed = Vec::new();
        for c in &self.config.device_classes {
            if let (ClassType::Thin, Some(p)) = (c.class_type, &c.thin_pool) {
                resumed.extend(volumes::recover_pool(&self.host, &c.volume_group, &p.name)?);
            }
        }
        Ok(resumed)
    }

    /// Activates the volume if needed and returns its device node.
    pub fn ensure_active(&self, v: &Volume) -> Result<std::path::PathBuf, VolumeError> {
        let path =
            crate::lvm::activate::mapper_path(&crate::lvm::activate::dm_name(&v.vg, &v.lv, None));
        if !path.exists() {
            volumes::set_active(
                &self.host,
                &v.vg,
                Some(std::slice::from_ref(&v.lv)),
                true,
                true,
            )?;
        }
        Ok(path)
    }

    /// Removes a volume; an unknown id is not an error (CSI's DeleteVolume).
    pub fn delete(&self, id: &str) -> Result<bool, VolumeError> {
        // The volume, and its device-mapper uuid from the same read.
        let mut found = None;
        for c in &self.config.device_classes {
            let vg = self.read_vg(&c.volume_group)?;
            let volume = class_volumes(c, &vg).find(|v| v.id == id);
            if let Some(v) = volume {
                let uuid = vg
                    .lv(&v.lv)
                    .map(|lv| crate::lvm::activate::dm_uuid(&vg, lv, None));
                found = Some((v, uuid));
                break;
            }
        }
        let Some((v, uuid)) = found else {
            return Ok(false);
        };
        // A device still open (the pod's mount not yet undone) is waited
        // for before the VG's commit lock: under it, the wait would hold up
        // every create and delete of the VG behind this one.
        if let (Some(dm), Some(uuid)) = (
            crate::lvm::activate::Dm::for_host(&self.host).map_err(LvmError::from)?,
            uuid,
        ) {
            dm.wait_closed(&uuid, &format!("{}/{}", v.vg, v.lv))
                .map_err(LvmError::from)?;
        }
        match self.class(Some(&v.class))?.wipe() {
            Wipe::None => {
                let queue = self.queue(&v.vg);
                let _leader = queue
                    .commit
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // A repeated delete that waited here behind the first finds
                // the LV gone: the volume is deleted, which is its answer.
                if self.read_vg(&v.vg)?.lv(&v.lv).is_some() {
                    volumes::remove(&self.host, &v.vg, &v.lv, false)?
                }
            }
            mode => self.retire(v, mode)?,
        }
        self.volume_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(true)
    }

    /// Grows a volume to at least `bytes` and at most `limit` (0: none);
    /// returns its new size. The growth must fit the class as a new volume
    /// would: thick, the free space less the spare; thin, the pool's
    /// overprovisioned room.
    pub fn expand(&self, id: &str, bytes: u64, limit: u64) -> Result<u64, VolumeError> {
        let v = self
            .find(id)?
            .ok_or_else(|| VolumeError::NotFound(id.into()))?;
        if v.bytes >= bytes {
            return Ok(v.bytes);
        }
        let queue = self.queue(&v.vg);
        let _leader = queue
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let class = self.class(Some(&v.class))?;
        let vg = self.read_vg(&v.vg)?;
        let es = vg.extent_size as u64 * 512;
        let stripes = class.stripe.unwrap_or(1).max(1) as u64;
        let target = bytes.div_ceil(es).div_ceil(stripes) * stripes * es;
        if let Some(e) = super::volume::over_limit(&v.name, target, limit) {
            return Err(e);
        }
        let room = class.capacity(&vg);
        if target - v.bytes > room {
            return Err(VolumeError::NoSpace {
                class: class.name.clone(),
                needed: target - v.bytes,
                available: room,
            });
        }
        let mut es = 0;
        let (_, now) = volumes::resize(&self.host, &v.vg, &v.lv, |vg, _, _| {
            es = vg.extent_size as u64 * 512;
            Ok((
                u32::try_from(bytes.div_ceil(es))
                    .map_err(|_| LvmError::Refused("too large".into()))?,
                None,
            ))
        })?;
        Ok(now as u64 * es)
    }
}

/// The volumes of `class` in its VG `vg`. Classes may share a VG (thick,
/// and thin in a pool of it): a thin class owns the thin LVs of its pool, a
/// thick class every ferrolvm LV that is not thin.
pub(crate) fn class_volumes<'a>(
    class: &'a DeviceClass,
    vg: &'a Vg,
) -> impl Iterator<Item = Volume> + 'a {
    let pool = class
        .thin_pool
        .as_ref()
        .filter(|_| class.class_type == ClassType::Thin)
        .map(|p| p.name.as_str());
    vg.lvs
        .iter()
        .filter(
            move |l| match l.segments.first().and_then(|s| s.thin.as_ref()) {
                Some(ferrolvm_metadata::ThinSegment::Thin { thin_pool, .. }) => {
                    Some(thin_pool.as_str()) == pool
                }
                _ => pool.is_none(),
            },
        )
        .filter_map(move |l| to_volume(vg, l, &class.name))
}
