//! Group commit: creates queue per VG, and whoever takes the VG's commit
//! lock drains the queue, applies every create to one model, commits once
//! and activates each. Thin creates of one class go into one pool
//! transaction.

use std::sync::{mpsc, Mutex, PoisonError};

use ferrolvm_metadata::ops;

use super::NodeEngine;
use crate::lvm::activate::Dm;
use crate::lvm::session::Session;
use crate::lvm::volumes;
use crate::lvm::LvmError;
use crate::node::config::{ClassType, DeviceClass};
use crate::node::volume::{
    csi_name, hex, lv_name_for, over_limit, to_volume, unique_name, Volume, VolumeError, NAME_TAG,
};

pub(super) struct Job {
    name: String,
    class: DeviceClass,
    required: u64,
    limit: u64,
    reply: mpsc::Sender<Result<Volume, VolumeError>>,
}

/// Creates per group commit, by VG: how much concurrent callers share.
pub static BATCH_SIZES: std::sync::LazyLock<crate::lvm::stats::Histograms> =
    std::sync::LazyLock::new(|| {
        prometheus_client::metrics::family::Family::new_with_constructor(batch_buckets as fn() -> _)
    });

/// 1, 2, 4, … 128 creates in one commit.
fn batch_buckets() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 8),
    )
}

fn batch_of(vg: &str, jobs: usize) {
    BATCH_SIZES
        .get_or_create(&crate::lvm::stats::VgLabels {
            volume_group: vg.to_string(),
        })
        .observe(jobs as f64);
}

/// Where a thick group commit's time went, milliseconds from its start
/// (for the peer benchmark's profile): the session (lock, scan, parse),
/// the model, the commit, the activations.
struct BatchTimes {
    start: std::time::Instant,
    jobs: usize,
    opened: f64,
    planned: f64,
    committed: f64,
    activated: f64,
}

impl BatchTimes {
    fn start(jobs: usize) -> BatchTimes {
        BatchTimes {
            start: std::time::Instant::now(),
            jobs,
            opened: 0.0,
            planned: 0.0,
            committed: 0.0,
            activated: 0.0,
        }
    }

    fn since(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    fn report(&self, vg: &str) {
        tracing::debug!(
            vg,
            jobs = self.jobs,
            opened_ms = self.opened,
            planned_ms = self.planned,
            committed_ms = self.committed,
            activated_ms = self.activated,
            "group commit"
        );
    }
}

#[derive(Default)]
pub(super) struct VgQueue {
    pub(super) pending: Mutex<Vec<Job>>,
    /// Deletes waiting for the next retire commit (`wipe.rs`).
    pub(super) retiring: Mutex<Vec<super::wipe::RetireJob>>,
    pub(super) commit: Mutex<()>,
}

/// The group-commit protocol creates and deletes share: queue the job,
/// take the VG's commit lock, and unless a leader before us has taken the
/// job and answered already, drain the queue and `run` all of it.
pub(super) fn group_commit<J, R>(
    queue: &Mutex<Vec<J>>,
    commit: &Mutex<()>,
    job: impl FnOnce(mpsc::Sender<Result<R, VolumeError>>) -> J,
    run: impl FnOnce(Vec<J>),
) -> Result<R, VolumeError> {
    let (reply, answer) = mpsc::channel();
    queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(job(reply));
    let _leader = commit.lock().unwrap_or_else(PoisonError::into_inner);
    if let Ok(r) = answer.try_recv() {
        return r;
    }
    let jobs = std::mem::take(&mut *queue.lock().unwrap_or_else(PoisonError::into_inner));
    run(jobs);
    answer.recv().unwrap_or_else(|_| {
        Err(VolumeError::Engine(LvmError::Refused(
            "the batch ended without answering".into(),
        )))
    })
}

impl NodeEngine {
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
        group_commit(
            &queue.pending,
            &queue.commit,
            |reply| Job {
                name: name.to_string(),
                class,
                required,
                limit,
                reply,
            },
            |jobs| self.run_batch(jobs),
        )
    }

    /// Applies every job to one VG model, commits once (thick) and activates.
    fn run_batch(&self, jobs: Vec<Job>) {
        let Some(first) = jobs.first() else { return };
        let vg_name = first.class.volume_group.clone();
        batch_of(&vg_name, jobs.len());
        let mut took = BatchTimes::start(jobs.len());
        let mut s = match Session::open(&self.host, &vg_name) {
            Ok(s) => s,
            Err(e) => {
                let e = VolumeError::from(e);
                for j in jobs {
                    let _ = j.reply.send(Err(e.share()));
                }
                return;
            }
        };
        took.opened = took.since();
        // With the VG's lvm2 lock held and every job taken: a panic here must
        // release the lock and leave the queue usable.
        crate::lvm::failpoint::hit("create-batch");
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
            let (stripes, stripe_size) = job.class.stripe_geometry();
            let extents = extents.div_ceil(stripes as u64) * stripes as u64;
            // Refused before anything is made: never a volume the caller must then delete.
            if let Some(e) = over_limit(&job.name, extents * es, job.limit) {
                let _ = job.reply.send(Err(e));
                continue;
            }
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
            let new = self.new_lv(
                lv_name.clone(),
                vec![format!("{NAME_TAG}{}", hex(&job.name))],
            );
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
        took.planned = took.since();
        if !created.is_empty() {
            let names: Vec<&str> = created.iter().map(|(j, _)| j.name.as_str()).collect();
            if let Err(e) = s.commit(
                vg,
                format!("Write from ferrolvm: CreateVolume {}.", names.join(", ")),
            ) {
                let e = VolumeError::from(e);
                for (j, _) in created {
                    let _ = j.reply.send(Err(e.share()));
                }
                created = Vec::new();
            }
        }
        let activate = |s: &Session, lv_name: &str, class: &str| -> Result<Volume, VolumeError> {
            let dm = Dm::open().map_err(LvmError::from)?;
            let lv =
                s.vg.lv(lv_name)
                    .ok_or_else(|| VolumeError::NotFound(lv_name.into()))?
                    .clone();
            if !dm.is_active(&s.vg, &lv) {
                let pvs =
                    crate::lvm::activate::pv_devices(&s.scan, &s.vg).map_err(LvmError::from)?;
                let table = crate::lvm::activate::striped_table(&s.vg, &lv, &pvs)
                    .map_err(LvmError::from)?;
                dm.activate(&s.vg, &lv, &table).map_err(LvmError::from)?;
                crate::lvm::activate::zero_start(&crate::lvm::activate::dm_name(
                    &s.vg.name, lv_name, None,
                ))
                .map_err(LvmError::from)?;
            }
            Ok(to_volume(&s.vg, &lv, class).expect("tagged"))
        };
        took.committed = took.since();
        for (job, lv) in created {
            let _ = job.reply.send(activate(&s, &lv, &job.class.name));
        }
        took.activated = took.since();
        drop(s);
        took.report(&vg_name);
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
            jobs.iter().map(|_| Err(e.share())).collect()
        };
        let Some(pool) = class.thin_pool.as_ref().map(|p| p.name.clone()) else {
            return fail(VolumeError::UnknownClass(class.name.clone()));
        };
        let (available, es) = match self
            .read_vg(&class.volume_group)
            .map(|vg| (class.capacity(&vg), vg.extent_size as u64 * 512))
        {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        // Admit jobs in order while the class has room for them.
        let mut admitted = Vec::new();
        let mut results: Vec<Option<Result<Volume, VolumeError>>> =
            jobs.iter().map(|_| None).collect();
        let mut used = 0u64;
        for (i, job) in jobs.iter().enumerate() {
            let bytes = job.required.max(1).div_ceil(es) * es;
            if let Some(e) = over_limit(&job.name, bytes, job.limit) {
                results[i] = Some(Err(e));
            } else if used + bytes > available {
                results[i] = Some(Err(VolumeError::NoSpace {
                    class: class.name.clone(),
                    needed: bytes,
                    available: available - used,
                }));
            } else {
                used += bytes;
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
                    .map_err(|_| LvmError::Refused("too large".into()))?;
                let tags = vec![format!("{NAME_TAG}{}", hex(&job.name))];
                items.push((self.new_lv(lv_name, tags), extents));
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
                let e = VolumeError::from(e);
                for &i in &admitted {
                    results[i] = Some(Err(e.share()));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every job answered"))
            .collect()
    }
}
