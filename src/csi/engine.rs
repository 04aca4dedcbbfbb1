//! The node engine: volumes keyed by their CSI name, on the device classes
//! of this node. It replaces TopoLVM's lvmd, in-process.
//!
//! - Idempotent: the CSI name is kept in an LV tag, so a retried or
//!   restarted create finds the volume it made instead of making a twin.
//! - Group commit: concurrent creates on one VG queue up; whoever takes the
//!   VG's commit lock drains the queue and commits all of them at once, then
//!   activates each. Thin classes commit one volume at a time (each thin
//!   change is one pool transaction).

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};

use ferrolvm_metadata::ops::{self, NewLv};
use ferrolvm_metadata::{Lv, Vg};

use super::config::{ClassType, DeviceClass, NodeConfig};
use crate::activate::Dm;
use crate::engine::{self, EngineError, Session};
use crate::host::Host;
use crate::volumes;

/// Tag prefix holding the hex-encoded CSI name (CSI names may hold characters tags may not).
pub const NAME_TAG: &str = "ferrolvm.io/name=";
/// Tag prefix of snapshots: the hex-encoded CSI snapshot name.
pub const SNAPSHOT_TAG: &str = "ferrolvm.io/snapshot=";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("unknown device class {0:?}")]
    UnknownClass(String),
    #[error(
        "volume {name:?} exists with {existing} bytes, which does not fit the requested range"
    )]
    Conflict { name: String, existing: u64 },
    #[error(
        "not enough space in device class {class}: {needed} bytes requested, {available} available"
    )]
    NoSpace {
        class: String,
        needed: u64,
        available: u64,
    },
    #[error("volume {0} not found")]
    NotFound(String),
    #[error("{0}")]
    NotThin(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A volume as the CSI layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `<lv uuid>` — stable across renames and restarts.
    pub id: String,
    pub name: String,
    pub class: String,
    pub vg: String,
    pub lv: String,
    pub bytes: u64,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The LV name for a CSI name: the name itself when LVM allows it, else a
/// stable hash of it.
pub fn lv_name_for(name: &str) -> String {
    if name.len() <= 64 && ferrolvm_metadata::names::check_lv_name(name).is_ok() {
        return name.to_string();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("csi-{h:016x}")
}

fn csi_name(lv: &Lv) -> Option<String> {
    lv.tags
        .iter()
        .find_map(|t| t.strip_prefix(NAME_TAG))
        .and_then(unhex)
}

fn snapshot_name(lv: &Lv) -> Option<String> {
    lv.tags
        .iter()
        .find_map(|t| t.strip_prefix(SNAPSHOT_TAG))
        .and_then(unhex)
}

/// A snapshot as the CSI layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    /// Volume id of the origin.
    pub source: String,
    pub bytes: u64,
    pub created: u64,
}

/// Where a new volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

struct Job {
    name: String,
    class: DeviceClass,
    required: u64,
    limit: u64,
    reply: mpsc::Sender<Result<Volume, VolumeError>>,
}

#[derive(Default)]
struct VgQueue {
    pending: Mutex<Vec<Job>>,
    commit: Mutex<()>,
}

pub struct NodeEngine {
    host: Host,
    pub config: NodeConfig,
    queues: Mutex<HashMap<String, Arc<VgQueue>>>,
}

fn to_volume(vg: &Vg, lv: &Lv, class: &str) -> Option<Volume> {
    Some(Volume {
        id: lv.id.dashed(),
        name: csi_name(lv)?,
        class: class.to_string(),
        vg: vg.name.clone(),
        lv: lv.name.clone(),
        bytes: lv.extent_count() as u64 * vg.extent_size as u64 * 512,
    })
}

impl NodeEngine {
    pub fn new(host: Host, config: NodeConfig) -> NodeEngine {
        NodeEngine {
            host,
            config,
            queues: Mutex::new(HashMap::new()),
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
        let scan = crate::scan::scan_paths(&self.host.candidate_devices());
        Ok(scan
            .vg(vg)
            .ok_or_else(|| EngineError::VgNotFound(vg.into()))?
            .vg
            .clone())
    }

    /// All volumes ferrolvm made on this node's classes.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let mut out = Vec::new();
        for c in &self.config.device_classes {
            let vg = self.read_vg(&c.volume_group)?;
            // Classes may share a VG (thick, and thin in a pool of it): each lists its own.
            let pool = c
                .thin_pool
                .as_ref()
                .filter(|_| c.class_type == ClassType::Thin)
                .map(|p| p.name.as_str());
            let mine = |l: &&Lv| match l.segments.first().and_then(|s| s.thin.as_ref()) {
                Some(ferrolvm_metadata::ThinSegment::Thin { thin_pool, .. }) => {
                    Some(thin_pool.as_str()) == pool
                }
                _ => pool.is_none(),
            };
            out.extend(
                vg.lvs
                    .iter()
                    .filter(mine)
                    .filter_map(|l| to_volume(&vg, l, &c.name)),
            );
        }
        Ok(out)
    }

    pub fn find(&self, id: &str) -> Result<Option<Volume>, VolumeError> {
        Ok(self.list()?.into_iter().find(|v| v.id == id))
    }

    /// Bytes a new volume of `class` can get.
    pub fn capacity(&self, class: Option<&str>) -> Result<u64, VolumeError> {
        let c = self.class(class)?;
        Ok(c.capacity(&self.read_vg(&c.volume_group)?))
    }

    /// Creates (or finds) the volume `name` with between `required` and
    /// `limit` bytes (`limit` 0: no limit), active.
    pub fn create(
        &self,
        name: &str,
        class: Option<&str>,
        required: u64,
        limit: u64,
    ) -> Result<Volume, VolumeError> {
        let class = self.class(class)?;
        let queue = self.queue(&class.volume_group);
        let (reply, answer) = mpsc::channel();
        queue.pending.lock().expect("poisoned").push(Job {
            name: name.to_string(),
            class,
            required,
            limit,
            reply,
        });
        if let Ok(r) = answer.try_recv() {
            return r;
        }
        let _leader = queue.commit.lock().expect("poisoned");
        // A leader before us may have taken our job and answered already.
        if let Ok(r) = answer.try_recv() {
            return r;
        }
        let jobs = std::mem::take(&mut *queue.pending.lock().expect("poisoned"));
        self.run_batch(jobs);
        answer.recv().unwrap_or_else(|_| {
            Err(VolumeError::Engine(EngineError::Refused(
                "the batch ended without answering".into(),
            )))
        })
    }

    /// Applies every job to one VG model, commits once (thick) and activates.
    fn run_batch(&self, jobs: Vec<Job>) {
        let Some(first) = jobs.first() else { return };
        let vg_name = first.class.volume_group.clone();
        let mut s = match Session::open(&self.host, &vg_name) {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                for j in jobs {
                    let _ = j
                        .reply
                        .send(Err(VolumeError::Engine(EngineError::Refused(msg.clone()))));
                }
                return;
            }
        };
        let mut vg = s.vg.clone();
        let mut created: Vec<(Job, String)> = Vec::new();
        let mut found: Vec<(Job, String)> = Vec::new();
        let mut thin: Vec<Job> = Vec::new();
        let es = vg.extent_size as u64 * 512;
        for job in jobs {
            if let Some(lv) = vg
                .lvs
                .iter()
                .find(|l| csi_name(l).as_deref() == Some(job.name.as_str()))
            {
                let bytes = lv.extent_count() as u64 * es;
                if bytes < job.required || (job.limit > 0 && bytes > job.limit) {
                    let _ = job.reply.send(Err(VolumeError::Conflict {
                        name: job.name.clone(),
                        existing: bytes,
                    }));
                } else {
                    let lv = lv.name.clone();
                    found.push((job, lv));
                }
                continue;
            }
            if job.class.class_type == ClassType::Thin {
                thin.push(job);
                continue;
            }
            let extents = job.required.max(1).div_ceil(es);
            let stripes = job.class.stripe.unwrap_or(1).max(1);
            let extents = extents.div_ceil(stripes as u64) * stripes as u64;
            let spare = job.class.spare_gb.unwrap_or(10) << 30;
            let free = ferrolvm_metadata::alloc::FreeMap::of(&vg).total() * es;
            if extents * es + spare > free {
                let available = free.saturating_sub(spare);
                let _ = job.reply.send(Err(VolumeError::NoSpace {
                    class: job.class.name.clone(),
                    needed: extents * es,
                    available,
                }));
                continue;
            }
            let lv_name = unique_name(&vg, &job.name);
            let stripe_size = job
                .class
                .stripe_size
                .as_deref()
                .and_then(|s| crate::cli::parse_size(s, 'k').ok())
                .map(|(_, b)| (b / 512) as u32)
                .or((stripes > 1).then_some(128));
            let new = NewLv {
                name: lv_name.clone(),
                id: engine::random_uuid(),
                tags: vec![format!("{NAME_TAG}{}", hex(&job.name))],
                creation_time: engine::now(),
                creation_host: self.host.hostname.clone(),
            };
            match u32::try_from(extents)
                .map_err(|_| ferrolvm_metadata::Error::Request("too large".into()))
                .and_then(|n| ops::create_lv(&mut vg, new, n, stripes, stripe_size, None))
            {
                Ok(()) => created.push((job, lv_name)),
                Err(e) => {
                    let _ = job.reply.send(Err(VolumeError::Engine(e.into())));
                }
            }
        }
        if !created.is_empty() {
            let names: Vec<&str> = created.iter().map(|(j, _)| j.name.as_str()).collect();
            if let Err(e) = s.commit(
                vg,
                format!("Write from ferrolvm: CreateVolume {}.", names.join(", ")),
            ) {
                let msg = e.to_string();
                for (j, _) in created {
                    let _ = j
                        .reply
                        .send(Err(VolumeError::Engine(EngineError::Refused(msg.clone()))));
                }
                created = Vec::new();
            }
        }
        let activate = |s: &Session, lv_name: &str, class: &str| -> Result<Volume, VolumeError> {
            let dm = Dm::open().map_err(EngineError::from)?;
            let lv =
                s.vg.lv(lv_name)
                    .ok_or_else(|| VolumeError::NotFound(lv_name.into()))?
                    .clone();
            if !dm.is_active(&s.vg, &lv) {
                let pvs = crate::activate::pv_devices(&s.scan, &s.vg).map_err(EngineError::from)?;
                let table =
                    crate::activate::striped_table(&s.vg, &lv, &pvs).map_err(EngineError::from)?;
                dm.activate(&s.vg, &lv, &table).map_err(EngineError::from)?;
                crate::activate::zero_start(&crate::activate::dm_name(&s.vg.name, lv_name, None))
                    .map_err(EngineError::from)?;
            }
            Ok(to_volume(&s.vg, &lv, class).expect("tagged"))
        };
        for (job, lv) in created {
            let _ = job.reply.send(activate(&s, &lv, &job.class.name));
        }
        drop(s);
        for (job, lv) in found {
            let r = volumes::set_active(
                &self.host,
                &vg_name,
                Some(std::slice::from_ref(&lv)),
                true,
                true,
            )
            .map_err(VolumeError::from)
            .and_then(|_| self.read_vg(&vg_name))
            .and_then(|vg| {
                vg.lv(&lv)
                    .and_then(|l| to_volume(&vg, l, &job.class.name))
                    .ok_or_else(|| VolumeError::NotFound(lv.clone()))
            });
            let _ = job.reply.send(r);
        }
        // Thin creates of one class share a pool transaction.
        let mut by_class: Vec<(String, Vec<Job>)> = Vec::new();
        for job in thin {
            match by_class.iter_mut().find(|(c, _)| *c == job.class.name) {
                Some((_, jobs)) => jobs.push(job),
                None => by_class.push((job.class.name.clone(), vec![job])),
            }
        }
        for (_, jobs) in by_class {
            let results = self.create_thin_batch(&jobs);
            for (job, r) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(r);
            }
        }
    }

    /// Thin volumes of one class in one pool transaction; one result per job.
    fn create_thin_batch(&self, jobs: &[Job]) -> Vec<Result<Volume, VolumeError>> {
        let class = jobs[0].class.clone();
        let fail = |e: VolumeError| -> Vec<Result<Volume, VolumeError>> {
            let msg = e.to_string();
            jobs.iter()
                .map(|_| Err(VolumeError::Engine(EngineError::Refused(msg.clone()))))
                .collect()
        };
        let Some(pool) = class.thin_pool.as_ref().map(|p| p.name.clone()) else {
            return fail(VolumeError::UnknownClass(class.name.clone()));
        };
        let available = match self.capacity(Some(&class.name)) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        // Admit jobs in order while the class has room for them.
        let mut admitted = Vec::new();
        let mut results: Vec<Option<Result<Volume, VolumeError>>> =
            jobs.iter().map(|_| None).collect();
        let mut used = 0u64;
        for (i, job) in jobs.iter().enumerate() {
            if used + job.required > available {
                results[i] = Some(Err(VolumeError::NoSpace {
                    class: class.name.clone(),
                    needed: job.required,
                    available: available - used,
                }));
            } else {
                used += job.required;
                admitted.push(i);
            }
        }
        if admitted.is_empty() {
            return results
                .into_iter()
                .map(|r| r.expect("every job answered"))
                .collect();
        }
        let mut lv_names: Vec<String> = Vec::new();
        let created = volumes::create_thins(&self.host, &class.volume_group, &pool, true, |vg| {
            let es = vg.extent_size as u64 * 512;
            let mut items = Vec::new();
            for &i in &admitted {
                let job = &jobs[i];
                let mut lv_name = unique_name(vg, &job.name);
                let mut n = 1;
                while lv_names.contains(&lv_name) {
                    lv_name = format!("{}-{n}", lv_name_for(&job.name));
                    n += 1;
                }
                lv_names.push(lv_name.clone());
                let extents = u32::try_from(job.required.max(1).div_ceil(es))
                    .map_err(|_| EngineError::Refused("too large".into()))?;
                let tags = vec![format!("{NAME_TAG}{}", hex(&job.name))];
                items.push((
                    NewLv {
                        name: lv_name,
                        id: engine::random_uuid(),
                        tags,
                        creation_time: engine::now(),
                        creation_host: self.host.hostname.clone(),
                    },
                    extents,
                ));
            }
            Ok(items)
        });
        match created {
            Ok(vg) => {
                for (&i, lv_name) in admitted.iter().zip(&lv_names) {
                    results[i] = Some(
                        vg.lv(lv_name)
                            .and_then(|l| to_volume(&vg, l, &class.name))
                            .ok_or_else(|| VolumeError::NotFound(lv_name.clone())),
                    );
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for &i in &admitted {
                    results[i] = Some(Err(VolumeError::Engine(EngineError::Refused(msg.clone()))));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every job answered"))
            .collect()
    }

    /// Activates the volume if needed and returns its device node.
    pub fn ensure_active(&self, v: &Volume) -> Result<std::path::PathBuf, VolumeError> {
        let path = crate::activate::mapper_path(&crate::activate::dm_name(&v.vg, &v.lv, None));
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

    /// Snapshots of this node's thin classes.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, VolumeError> {
        let mut out = Vec::new();
        for c in self
            .config
            .device_classes
            .iter()
            .filter(|c| c.class_type == ClassType::Thin)
        {
            let vg = self.read_vg(&c.volume_group)?;
            for lv in &vg.lvs {
                let Some(name) = snapshot_name(lv) else {
                    continue;
                };
                let source = lv
                    .tags
                    .iter()
                    .find_map(|t| t.strip_prefix("ferrolvm.io/source="))
                    .map(str::to_string)
                    .unwrap_or_default();
                out.push(Snapshot {
                    id: lv.id.dashed(),
                    name,
                    source,
                    bytes: lv.extent_count() as u64 * vg.extent_size as u64 * 512,
                    created: lv.creation_time.unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Thin class and LV name holding volume or snapshot `id`.
    fn locate(&self, id: &str) -> Result<(DeviceClass, String), VolumeError> {
        for c in self
            .config
            .device_classes
            .iter()
            .filter(|c| c.class_type == ClassType::Thin)
        {
            let vg = self.read_vg(&c.volume_group)?;
            let pool = c.thin_pool.as_ref().map(|p| p.name.as_str());
            if let Some(lv) = vg.lvs.iter().find(|l| {
                l.id.dashed() == id
                    && (csi_name(l).is_some() || snapshot_name(l).is_some())
                    && matches!(l.segments.first().and_then(|s| s.thin.as_ref()), Some(ferrolvm_metadata::ThinSegment::Thin { thin_pool, .. }) if Some(thin_pool.as_str()) == pool)
            }) {
                return Ok((c.clone(), lv.name.clone()));
            }
        }
        Err(VolumeError::NotFound(id.to_string()))
    }

    /// Creates (or finds) snapshot `name` of volume `source` (thin classes only).
    pub fn create_snapshot(&self, name: &str, source: &str) -> Result<Snapshot, VolumeError> {
        if let Some(s) = self.snapshots()?.into_iter().find(|s| s.name == name) {
            return if s.source == source {
                Ok(s)
            } else {
                Err(VolumeError::Conflict {
                    name: name.into(),
                    existing: s.bytes,
                })
            };
        }
        self.find(source)?
            .ok_or_else(|| VolumeError::NotFound(source.to_string()))?;
        let (class, origin) = self.locate(source).map_err(|_| VolumeError::NotThin(format!("volume {source} is not in a thin device class: only thin volumes can be snapshotted")))?;
        let pool = class
            .thin_pool
            .as_ref()
            .map(|p| p.name.clone())
            .expect("thin class has a pool");
        let queue = self.queue(&class.volume_group);
        let _leader = queue.commit.lock().expect("poisoned");
        volumes::create_thin(
            &self.host,
            &class.volume_group,
            &pool,
            Some(&origin),
            false,
            |vg| {
                let lv_name = unique_name(vg, &format!("snap-{}", lv_name_for(name)));
                let tags = vec![
                    format!("{SNAPSHOT_TAG}{}", hex(name)),
                    format!("ferrolvm.io/source={source}"),
                ];
                Ok((
                    NewLv {
                        name: lv_name,
                        id: engine::random_uuid(),
                        tags,
                        creation_time: engine::now(),
                        creation_host: self.host.hostname.clone(),
                    },
                    0,
                ))
            },
        )?;
        self.snapshots()?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// Removes a snapshot; an unknown id is not an error.
    pub fn delete_snapshot(&self, id: &str) -> Result<bool, VolumeError> {
        if !self.snapshots()?.iter().any(|s| s.id == id) {
            return Ok(false);
        }
        let (class, lv) = self.locate(id)?;
        let queue = self.queue(&class.volume_group);
        let _leader = queue.commit.lock().expect("poisoned");
        volumes::remove(&self.host, &class.volume_group, &lv, false)?;
        Ok(true)
    }

    /// A new volume holding the content of a snapshot or a volume (thin classes only).
    pub fn create_from(
        &self,
        name: &str,
        class: Option<&str>,
        required: u64,
        limit: u64,
        source: &Source,
    ) -> Result<Volume, VolumeError> {
        if let Some(v) = self.list()?.into_iter().find(|v| v.name == name) {
            return if v.bytes >= required && (limit == 0 || v.bytes <= limit) {
                Ok(v)
            } else {
                Err(VolumeError::Conflict {
                    name: name.into(),
                    existing: v.bytes,
                })
            };
        }
        let (id, known) = match source {
            Source::Snapshot(id) => (id, self.snapshots()?.iter().any(|s| &s.id == id)),
            Source::Volume(id) => (id, self.find(id)?.is_some()),
        };
        if !known {
            return Err(VolumeError::NotFound(id.clone()));
        }
        let (src_class, origin) = self.locate(id).map_err(|_| VolumeError::NotThin(format!("{id} is not in a thin device class: only thin volumes and snapshots can be sources")))?;
        let wanted = self.class(class)?;
        if wanted.name != src_class.name {
            return Err(VolumeError::NotThin(format!(
                "the source is in device class {}, the new volume would be in {}",
                src_class.name, wanted.name
            )));
        }
        let pool = src_class
            .thin_pool
            .as_ref()
            .map(|p| p.name.clone())
            .expect("thin class has a pool");
        let queue = self.queue(&src_class.volume_group);
        let leader = queue.commit.lock().expect("poisoned");
        let mut lv_name = String::new();
        let vg = volumes::create_thin(
            &self.host,
            &src_class.volume_group,
            &pool,
            Some(&origin),
            false,
            |vg| {
                lv_name = unique_name(vg, name);
                Ok((
                    NewLv {
                        name: lv_name.clone(),
                        id: engine::random_uuid(),
                        tags: vec![format!("{NAME_TAG}{}", hex(name))],
                        creation_time: engine::now(),
                        creation_host: self.host.hostname.clone(),
                    },
                    0,
                ))
            },
        )?;
        drop(leader);
        let mut v = vg
            .lv(&lv_name)
            .and_then(|l| to_volume(&vg, l, &src_class.name))
            .ok_or_else(|| VolumeError::NotFound(lv_name.clone()))?;
        if v.bytes < required {
            v.bytes = self.expand(&v.id, required)?;
        }
        self.ensure_active(&v)?;
        Ok(v)
    }

    /// Removes a volume; an unknown id is not an error (CSI's DeleteVolume).
    pub fn delete(&self, id: &str) -> Result<bool, VolumeError> {
        let Some(v) = self.find(id)? else {
            return Ok(false);
        };
        let queue = self.queue(&v.vg);
        let _leader = queue.commit.lock().expect("poisoned");
        volumes::remove(&self.host, &v.vg, &v.lv, false)?;
        Ok(true)
    }

    /// Grows a volume to at least `bytes`; returns its new size.
    pub fn expand(&self, id: &str, bytes: u64) -> Result<u64, VolumeError> {
        let v = self
            .find(id)?
            .ok_or_else(|| VolumeError::NotFound(id.into()))?;
        if v.bytes >= bytes {
            return Ok(v.bytes);
        }
        let queue = self.queue(&v.vg);
        let _leader = queue.commit.lock().expect("poisoned");
        let mut es = 0;
        let (_, now) = volumes::resize(&self.host, &v.vg, &v.lv, |vg, _, _| {
            es = vg.extent_size as u64 * 512;
            Ok((
                u32::try_from(bytes.div_ceil(es))
                    .map_err(|_| EngineError::Refused("too large".into()))?,
                None,
            ))
        })?;
        Ok(now as u64 * es)
    }
}

fn unique_name(vg: &Vg, name: &str) -> String {
    let base = lv_name_for(name);
    if vg.lv(&base).is_none() {
        return base;
    }
    (1..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| vg.lv(n).is_none())
        .expect("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(lv_name_for("pvc-0f1e2d"), "pvc-0f1e2d");
        let odd = lv_name_for("sanity-Node Service NodePublish 1234");
        assert!(odd.starts_with("csi-") && odd.len() == 20);
        assert_eq!(
            lv_name_for("snapshot-x"),
            lv_name_for("snapshot-x"),
            "stable"
        );
        assert!(
            lv_name_for("snapshot-x").starts_with("csi-"),
            "reserved LV names are hashed"
        );
        let name = "sanity name with spaces/ and ünïcode";
        let tag = format!("{NAME_TAG}{}", hex(name));
        ferrolvm_metadata::names::check_tag(&tag).unwrap();
        assert_eq!(unhex(&hex(name)).as_deref(), Some(name));
    }
}
