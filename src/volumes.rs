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
use ferrolvm_metadata::{Area, Vg};

use crate::activate::{self, Action, Dm};
use crate::engine::{EngineError, Result, Session};
use crate::host::Host;
use crate::scan::Scan;

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

fn table(s: &Session, vg: &Vg, name: &str) -> Result<Vec<activate::TableLine>> {
    let lv = vg
        .lv(name)
        .ok_or_else(|| EngineError::Refused(format!("{}/{name} vanished", vg.name)))?;
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
    let dm = if activate { Some(Dm::open()?) } else { None };
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
                .map_err(EngineError::from)
                .and_then(|_| {
                    s.commit(undo, format!("Write from ferrolvm: undo lvcreate {name}."))
                });
            return Err(match undone {
                Ok(()) => cause,
                Err(rollback) => EngineError::Rollback {
                    cause: Box::new(cause),
                    rollback: Box::new(rollback),
                },
            });
        }
    }
    Ok(s.vg)
}

/// Activates or deactivates LVs (all visible linear/striped LVs when `only` is None).
pub fn set_active(
    host: &Host,
    vg_name: &str,
    only: Option<&[String]>,
    active: bool,
) -> Result<Vec<(String, Action)>> {
    let dm = Dm::open()?;
    let s = Session::open(host, vg_name)?;
    let mut done = Vec::new();
    let names: Vec<String> = match only {
        Some(list) => list.to_vec(),
        None => {
            s.vg.lvs
                .iter()
                .filter(|l| l.visible() && l.managed())
                .map(|l| l.name.clone())
                .collect()
        }
    };
    for name in names {
        let lv = s.vg.lv(&name).ok_or_else(|| {
            EngineError::Refused(format!("logical volume {vg_name}/{name} not found"))
        })?;
        let action = if active {
            if !lv.managed() {
                return Err(EngineError::Refused(format!("{vg_name}/{name} is not a linear or striped LV; ferrolvm cannot activate it yet")));
            }
            activate_lv(&s, &dm, &name, false)?
        } else {
            dm.deactivate(&s.vg, lv)?
        };
        done.push((name, action));
    }
    Ok(done)
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
    let cur = s
        .vg
        .lv(name)
        .ok_or_else(|| EngineError::Refused(format!("logical volume {vg_name}/{name} not found")))?
        .extent_count();
    let (extents, pvs) = plan(&s.vg, &s.scan, cur)?;
    let mut vg = s.vg.clone();
    let desc = format!("Write from ferrolvm lvresize {vg_name}/{name}.");
    let dm = Dm::open()
        .ok()
        .filter(|dm| s.vg.lv(name).is_some_and(|lv| dm.is_active(&s.vg, lv)));
    if extents > cur {
        ops::extend_lv(&mut vg, name, extents, pvs.as_deref())?;
        s.commit(vg, desc)?;
        if let Some(dm) = dm {
            let t = table(&s, &s.vg, name)?;
            dm.reload(&s.vg, s.vg.lv(name).expect("exists"), &t)?;
        }
    } else if extents < cur {
        ops::reduce_lv(&mut vg, name, extents)?;
        if let Some(dm) = &dm {
            let t = table(&s, &vg, name)?;
            dm.reload(&s.vg, s.vg.lv(name).expect("exists"), &t)?;
        }
        s.commit(vg, desc)?;
    } else {
        return Err(EngineError::Refused(format!(
            "new size ({extents} extents) matches the existing size"
        )));
    }
    Ok((cur, extents))
}

/// Deactivates (refusing an open LV), removes, and optionally discards.
pub fn remove(host: &Host, vg_name: &str, name: &str, discard: bool) -> Result<()> {
    let mut s = Session::open(host, vg_name)?;
    let lv = s
        .vg
        .lv(name)
        .ok_or_else(|| EngineError::Refused(format!("logical volume {vg_name}/{name} not found")))?
        .clone();
    if let Ok(dm) = Dm::open() {
        dm.deactivate(&s.vg, &lv)?;
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
    for (path, offset, len) in ranges {
        crate::disk::discard(&path, offset, len).map_err(|source| EngineError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Byte ranges on PV devices an LV occupies.
fn pv_ranges(s: &Session, lv: &ferrolvm_metadata::Lv) -> Vec<(std::path::PathBuf, u64, u64)> {
    let vg = &s.vg;
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
