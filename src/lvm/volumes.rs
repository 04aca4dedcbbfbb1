//! LV operations that combine a metadata commit with device-mapper, each in
//! the order that keeps a crash safe, all under one VG lock (`Session`):
//!
//! - create: commit, then activate (and zero the first 4 KiB). If
//!   activation fails the LV is removed again; if that fails too, both
//!   errors are reported.
//! - grow: commit, then reload the table. A crash in between leaves a
//!   device smaller than its LV, which the next activation fixes.
//! - shrink: reload first, then commit, so freed extents are never mapped.
//! - remove: deactivate, commit, then discard the freed extents if asked
//!   (still under the lock, so nobody can have reused them).

use ferrolvm_metadata::ops::{self, NewLv};
use ferrolvm_metadata::{Area, ThinSegment, Vg};

use crate::lvm::activate::{self, Action, Dm};
use crate::lvm::failpoint;
use crate::lvm::host::Host;
use crate::lvm::scan::Scan;
use crate::lvm::session::Session;
use crate::lvm::{LvmError, Result};

/// What to create.
#[derive(Debug, Clone)]
pub struct LvSpec {
    pub new: NewLv,
    pub extents: u32,
    pub stripes: u32,
    pub stripe_size: Option<u32>,
    /// Restrict allocation to these PV section names.
    pub pvs: Option<Vec<String>>,
    pub zero: bool,
}

/// The table of an active plain or thin LV, for a reload.
fn live_table(s: &Session, dm: &Dm, vg: &Vg, name: &str) -> Result<Vec<activate::TableLine>> {
    let LvKind::Thin(pool) = kind(vg, name) else {
        return table(s, vg, name);
    };
    let lv = vg.lv(name).expect("kind() found it");
    let pool_lv = vg
        .lv(&pool)
        .ok_or_else(|| LvmError::Refused(format!("thin pool {pool} vanished")))?;
    let tpool = dm
        .info(&activate::dm_uuid(vg, pool_lv, Some("tpool")))
        .ok_or_else(|| LvmError::Refused(format!("thin pool {pool} is not active")))?
        .device();
    let Some(ThinSegment::Thin { device_id, .. }) =
        lv.segments.first().and_then(|s| s.thin.as_ref())
    else {
        unreachable!()
    };
    Ok(vec![(
        0,
        lv.extent_count() as u64 * vg.extent_size as u64,
        "thin".into(),
        format!("{}:{} {device_id}", tpool.major, tpool.minor),
    )])
}

fn table(s: &Session, vg: &Vg, name: &str) -> Result<Vec<activate::TableLine>> {
    let lv = vg
        .lv(name)
        .ok_or_else(|| LvmError::Refused(format!("{}/{name} vanished", vg.name)))?;
    let pvs = activate::pv_devices(&s.scan, vg)?;
    Ok(activate::striped_table(vg, lv, &pvs)?)
}

fn activate_lv(s: &Session, dm: &Dm, name: &str, zero: bool) -> Result<Action> {
    let vg = &s.vg;
    let t = table(s, vg, name)?;
    let lv = vg.lv(name).expect("table() checked it");
    let action = dm.activate(vg, lv, &t)?;
    if zero && action == Action::Done {
        activate::zero_start(&activate::dm_name(&vg.name, name, None))?;
    }
    Ok(action)
}

/// Creates an LV; `plan` sizes it from the VG as read under the lock.
pub fn create(
    host: &Host,
    vg_name: &str,
    activate: bool,
    plan: impl FnOnce(&Vg, &Scan) -> Result<LvSpec>,
) -> Result<Vg> {
    let dm = if activate {
        Some(activation_dm(host)?)
    } else {
        None
    };
    let mut s = Session::open(host, vg_name)?;
    let spec = plan(&s.vg, &s.scan)?;
    let mut vg = s.vg.clone();
    let name = spec.new.name.clone();
    ops::create_lv(
        &mut vg,
        spec.new,
        spec.extents,
        spec.stripes,
        spec.stripe_size,
        spec.pvs.as_deref(),
    )?;
    s.commit(
        vg,
        format!("Write from ferrolvm lvcreate -n {name} {vg_name}."),
    )?;
    if let Some(dm) = dm {
        if let Err(cause) = activate_lv(&s, &dm, &name, spec.zero) {
            let mut undo = s.vg.clone();
            let undone = ops::remove_lv(&mut undo, &name)
                .map_err(LvmError::from)
                .and_then(|_| {
                    s.commit(undo, format!("Write from ferrolvm: undo lvcreate {name}."))
                });
            return Err(match undone {
                Ok(()) => cause,
                Err(rollback) => LvmError::Rollback {
                    cause: Box::new(cause),
                    rollback: Box::new(rollback),
                },
            });
        }
    }
    Ok(s.vg)
}

/// Activates or deactivates LVs; with `only` None, every visible LV that
/// is not marked to be skipped (lvm2's ACTIVATION_SKIP) unless `ignore_skip`.
pub fn set_active(
    host: &Host,
    vg_name: &str,
    only: Option<&[String]>,
    active: bool,
    ignore_skip: bool,
) -> Result<Vec<(String, Action)>> {
    let dm = activation_dm(host)?;
    let mut s = Session::open(host, vg_name)?;
    let mut names: Vec<String> = match only {
        Some(list) => list.to_vec(),
        None => {
            s.vg.lvs
                .iter()
                .filter(|l| l.visible() && l.managed())
                .map(|l| l.name.clone())
                .collect()
        }
    };
    // Thin LVs go down before their pools, and come up after them.
    names.sort_by_key(|n| (kind(&s.vg, n) == LvKind::Pool) != active);
    let mut done = Vec::new();
    for name in names {
        let lv = s
            .vg
            .lv(&name)
            .ok_or_else(|| LvmError::Refused(format!("logical volume {vg_name}/{name} not found")))?
            .clone();
        let action = if active {
            if !lv.managed() {
                return Err(LvmError::Refused(format!(
                    "{vg_name}/{name} has a segment type ferrolvm cannot activate; use lvm2 for it"
                )));
            }
            if lv.flags.iter().any(|f| f == "ACTIVATION_SKIP") && !ignore_skip {
                continue;
            }
            activate_any(&mut s, &dm, &name, false)?
        } else {
            match kind(&s.vg, &name) {
                LvKind::Pool => {
                    if dm.deactivate_pool_if_unused(&s.vg, &name)? {
                        Action::Done
                    } else {
                        return Err(LvmError::Refused(format!(
                            "thin pool {vg_name}/{name} has active thin LVs"
                        )));
                    }
                }
                LvKind::Thin(pool) => {
                    let a = dm.deactivate(&s.vg, &lv)?;
                    dm.deactivate_pool_if_unused(&s.vg, &pool)?;
                    a
                }
                LvKind::Plain => dm.deactivate(&s.vg, &lv)?,
            }
        };
        done.push((name, action));
    }
    Ok(done)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LvKind {
    Plain,
    Pool,
    /// A thin LV, with its pool.
    Thin(String),
}

fn kind(vg: &Vg, name: &str) -> LvKind {
    match vg
        .lv(name)
        .and_then(|l| l.segments.first())
        .and_then(|s| s.thin.as_ref())
    {
        Some(ThinSegment::Pool { .. }) => LvKind::Pool,
        Some(ThinSegment::Thin { thin_pool, .. }) => LvKind::Thin(thin_pool.clone()),
        None => LvKind::Plain,
    }
}

/// Activates a pool, brings the kernel to the metadata's transaction id and,
/// if that meant replaying queued messages, commits them cleared.
fn ensure_pool(s: &mut Session, dm: &Dm, pool: &str) -> Result<devicemapper::Device> {
    let pvs = activate::pv_devices(&s.scan, &s.vg)?;
    let tpool = dm.activate_pool(&s.vg, pool, &pvs)?;
    dm.sync_pool(&s.vg, pool)?;
    if !ops::pending_thin_messages(&s.vg, pool).is_empty() {
        failpoint::hit("thin-before-clear");
        let mut vg = s.vg.clone();
        ops::clear_thin_messages(&mut vg, pool)?;
        s.commit(
            vg,
            format!("Write from ferrolvm: thin pool {pool} messages applied."),
        )?;
    }
    Ok(tpool)
}

/// Brings a thin pool back to a consistent state after a crash: replays
/// messages an interrupted change left queued (committing them cleared) and
/// resumes any of its thin LVs left suspended. Returns the names resumed.
pub fn recover_pool(host: &Host, vg_name: &str, pool: &str) -> Result<Vec<String>> {
    let dm = activation_dm(host)?;
    let mut s = Session::open(host, vg_name)?;
    ensure_pool(&mut s, &dm, pool)?;
    Ok(dm.resume_suspended_thins(&s.vg, pool)?)
}

fn activate_any(s: &mut Session, dm: &Dm, name: &str, zero: bool) -> Result<Action> {
    match kind(&s.vg, name) {
        LvKind::Plain => activate_lv(s, dm, name, zero),
        LvKind::Pool => ensure_pool(s, dm, name).map(|_| Action::Done),
        LvKind::Thin(pool) => {
            let tpool = ensure_pool(s, dm, &pool)?;
            let lv = s.vg.lv(name).expect("kind() found it").clone();
            Ok(dm.activate_thin(&s.vg, &lv, tpool)?)
        }
    }
}

/// A new thin pool; its metadata superblock is zeroed on the PV before the
/// commit (the extents are still free then), so the kernel formats a fresh pool.
pub fn create_pool(
    host: &Host,
    vg_name: &str,
    activate: bool,
    plan: impl FnOnce(&Vg, &Scan) -> Result<(ops::NewPool, Option<Vec<String>>)>,
) -> Result<Vg> {
    let dm = if activate {
        Some(activation_dm(host)?)
    } else {
        None
    };
    let mut s = Session::open(host, vg_name)?;
    let (pool, pvs) = plan(&s.vg, &s.scan)?;
    let name = pool.lv.name.clone();
    let mut vg = s.vg.clone();
    ops::create_thin_pool(&mut vg, pool, pvs.as_deref())?;
    let tmeta = vg
        .lv(&format!("{name}_tmeta"))
        .expect("just created")
        .clone();
    let head = pv_ranges_in(&s, &vg, &tmeta)
        .into_iter()
        .next()
        .ok_or_else(|| LvmError::Refused("the pool metadata LV has no PV area".into()))?;
    let mut disk =
        crate::lvm::disk::BlockDisk::open(&head.0, true).map_err(|source| LvmError::Io {
            path: head.0.display().to_string(),
            source,
        })?;
    crate::lvm::disk::Disk::write_at(&mut disk, head.1, &[0u8; 4096])
        .and_then(|_| crate::lvm::disk::Disk::flush(&mut disk))
        .map_err(|source| LvmError::Io {
            path: head.0.display().to_string(),
            source,
        })?;
    s.commit(
        vg,
        format!("Write from ferrolvm lvcreate --type thin-pool -n {name} {vg_name}."),
    )?;
    if let Some(dm) = dm {
        ensure_pool(&mut s, &dm, &name)?;
    }
    Ok(s.vg)
}

/// A thin LV (or, with `origin`, a thin snapshot), by lvm2's two-commit
/// protocol: queue the message and commit; have the kernel apply it; commit
/// with it cleared. A crash between any two steps is finished by the next
/// activation of the pool, by ferrolvm or by lvm2.
pub fn create_thin(
    host: &Host,
    vg_name: &str,
    pool: &str,
    origin: Option<&str>,
    activate: bool,
    plan: impl FnOnce(&Vg) -> Result<(NewLv, u32)>,
) -> Result<Vg> {
    let dm = activation_dm(host)?;
    let mut s = Session::open(host, vg_name)?;
    let (new, extents) = plan(&s.vg)?;
    let name = new.name.clone();
    // Apply anything an earlier, interrupted run left queued first.
    ensure_pool(&mut s, &dm, pool)?;
    let mut vg = s.vg.clone();
    ops::create_thin(&mut vg, pool, new, extents, origin)?;
    s.commit(
        vg,
        format!(
            "Write from ferrolvm lvcreate {} {vg_name}/{name}.",
            if origin.is_some() { "-s" } else { "-T" }
        ),
    )?;
    failpoint::hit("thin-queued");
    ensure_pool(&mut s, &dm, pool)?;
    failpoint::hit("thin-cleared");
    let lv = s.vg.lv(&name).expect("created").clone();
    if activate {
        let tpool = ensure_pool(&mut s, &dm, pool)?;
        dm.activate_thin(&s.vg, &lv, tpool)?;
    }
    Ok(s.vg)
}

/// Several thin LVs in one pool transaction (group commit for thin
/// classes): the same protocol as `create_thin`, with one message each.
pub fn create_thins(
    host: &Host,
    vg_name: &str,
    pool: &str,
    activate: bool,
    plan: impl FnOnce(&Vg) -> Result<Vec<(NewLv, u32)>>,
) -> Result<Vg> {
    let dm = activation_dm(host)?;
    let mut s = Session::open(host, vg_name)?;
    let items = plan(&s.vg)?;
    let names: Vec<String> = items.iter().map(|(n, _)| n.name.clone()).collect();
    ensure_pool(&mut s, &dm, pool)?;
    let mut vg = s.vg.clone();
    ops::create_thins(&mut vg, pool, items)?;
    s.commit(
        vg,
        format!(
            "Write from ferrolvm: thin LVs {} in {vg_name}/{pool}.",
            names.join(", ")
        ),
    )?;
    failpoint::hit("thin-queued");
    let tpool = ensure_pool(&mut s, &dm, pool)?;
    if activate {
        for name in &names {
            let lv = s.vg.lv(name).expect("created").clone();
            dm.activate_thin(&s.vg, &lv, tpool)?;
        }
    }
    Ok(s.vg)
}

/// Resizes to the extents `plan` returns (from the VG as read under the
/// lock, given the current extent count), growing or shrinking, reloading
/// an active LV in the safe order. Returns the old and new extent counts.
pub fn resize(
    host: &Host,
    vg_name: &str,
    name: &str,
    plan: impl FnOnce(&Vg, &Scan, u32) -> Result<(u32, Option<Vec<String>>)>,
) -> Result<(u32, u32)> {
    let mut s = Session::open(host, vg_name)?;
    let cur =
        s.vg.lv(name)
            .ok_or_else(|| LvmError::Refused(format!("logical volume {vg_name}/{name} not found")))?
            .extent_count();
    let (extents, pvs) = plan(&s.vg, &s.scan, cur)?;
    let mut vg = s.vg.clone();
    let desc = format!("Write from ferrolvm lvresize {vg_name}/{name}.");
    let dm =
        Dm::for_host(host)?.filter(|dm| s.vg.lv(name).is_some_and(|lv| dm.is_active(&s.vg, lv)));
    if extents > cur {
        ops::extend_lv(&mut vg, name, extents, pvs.as_deref())?;
        s.commit(vg, desc)?;
        if let Some(dm) = dm {
            let t = live_table(&s, &dm, &s.vg, name)?;
            dm.reload(&s.vg, s.vg.lv(name).expect("exists"), &t)?;
        }
    } else if extents < cur {
        ops::reduce_lv(&mut vg, name, extents)?;
        if let Some(dm) = &dm {
            let t = live_table(&s, dm, &vg, name)?;
            dm.reload(&s.vg, s.vg.lv(name).expect("exists"), &t)?;
        }
        s.commit(vg, desc)?;
    } else {
        return Err(LvmError::Refused(format!(
            "new size ({extents} extents) matches the existing size"
        )));
    }
    Ok((cur, extents))
}

/// Device-mapper for a change that needs it (activation, thin pools):
/// refused outright under `--driverloaded n`.
pub(crate) fn activation_dm(host: &Host) -> Result<Dm> {
    Dm::for_host(host)?.ok_or_else(|| {
        LvmError::Refused(
            "this needs device-mapper, and --driverloaded n was given (only metadata changes of inactive linear and striped LVs can be made without it)".into(),
        )
    })
}

/// Deactivates (refusing an open LV), removes, and optionally discards.
/// A thin LV's removal queues the pool's delete message and follows the
/// same two-commit protocol as its creation.
pub fn remove(host: &Host, vg_name: &str, name: &str, discard: bool) -> Result<()> {
    let mut s = Session::open(host, vg_name)?;
    let lv =
        s.vg.lv(name)
            .ok_or_else(|| LvmError::Refused(format!("logical volume {vg_name}/{name} not found")))?
            .clone();
    let dm = Dm::for_host(host)?;
    let k = kind(&s.vg, name);
    match (&dm, &k) {
        (Some(dm), LvKind::Pool) => {
            if !ops::thin_lvs(&s.vg, name).is_empty() {
                return Err(LvmError::Refused(format!(
                    "thin pool {vg_name}/{name} still holds thin LVs; remove them first"
                )));
            }
            dm.deactivate_pool_if_unused(&s.vg, name)?;
        }
        (Some(dm), _) => {
            dm.deactivate(&s.vg, &lv)?;
        }
        (None, LvKind::Thin(_)) => {
            return Err(LvmError::Refused(
                "removing a thin LV needs device-mapper to update the pool".into(),
            ))
        }
        (None, _) => {}
    }
    let ranges = if discard {
        pv_ranges(&s, &lv)
    } else {
        Vec::new()
    };
    let mut vg = s.vg.clone();
    ops::remove_lv(&mut vg, name)?;
    s.commit(
        vg,
        format!("Write from ferrolvm lvremove {vg_name}/{name}."),
    )?;
    if let (Some(dm), LvKind::Thin(pool)) = (&dm, &k) {
        failpoint::hit("thin-queued");
        let was_active = s.vg.lv(pool).is_some_and(|p| {
            dm.info(&activate::dm_uuid(&s.vg, p, Some("tpool")))
                .is_some()
        });
        ensure_pool(&mut s, dm, pool)?;
        if !was_active {
            dm.deactivate_pool_if_unused(&s.vg, pool)?;
        }
    }
    for (path, offset, len) in ranges {
        crate::lvm::disk::discard(&path, offset, len).map_err(|source| LvmError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Deactivates and removes linear or striped LVs of `vg_name` in one
/// commit (the node's wiper frees many wiped LVs at once). Anything else
/// among `names` refuses the whole change before it is made.
pub fn remove_plain(
    host: &Host,
    vg_name: &str,
    names: &[String],
    description: String,
) -> Result<()> {
    let mut s = Session::open(host, vg_name)?;
    let dm = Dm::for_host(host)?;
    let mut vg = s.vg.clone();
    for name in names {
        let lv = s
            .vg
            .lv(name)
            .ok_or_else(|| LvmError::Refused(format!("logical volume {vg_name}/{name} not found")))?
            .clone();
        if kind(&s.vg, name) != LvKind::Plain || !lv.managed() {
            return Err(LvmError::Refused(format!(
                "{vg_name}/{name} is not a linear or striped LV; remove it on its own"
            )));
        }
        if let Some(dm) = &dm {
            dm.deactivate(&s.vg, &lv)?;
        }
        ops::remove_lv(&mut vg, name)?;
    }
    s.commit(vg, description)
}

/// Byte ranges on PV devices an LV occupies.
fn pv_ranges(s: &Session, lv: &ferrolvm_metadata::Lv) -> Vec<(std::path::PathBuf, u64, u64)> {
    pv_ranges_in(s, &s.vg, lv)
}

fn pv_ranges_in(
    s: &Session,
    vg: &Vg,
    lv: &ferrolvm_metadata::Lv,
) -> Vec<(std::path::PathBuf, u64, u64)> {
    let es = vg.extent_size as u64 * 512;
    let found = s.scan.assembly.vgs.iter().find(|f| f.vg.id == vg.id);
    let mut out = Vec::new();
    for seg in &lv.segments {
        for a in &seg.areas {
            if let Area::Pv { pv, pe } = a {
                let Some(p) = vg.pv(pv) else { continue };
                if let Some(&dev) = found.and_then(|f| f.pv_devs.get(&p.id)) {
                    out.push((
                        s.scan.devices[dev].path.clone(),
                        p.pe_start * 512 + *pe as u64 * es,
                        seg.area_len() as u64 * es,
                    ));
                }
            }
        }
    }
    out
}
