//! Pure changes to a [`Vg`]: each checks its preconditions and leaves the VG
//! untouched when it fails. Seqno, text and writes are the commit planner's job.

use crate::alloc::{self, Request};
use crate::model::{Lv, Pv, Vg};
use crate::{names, Error, Uuid};

/// A PV joining a VG, as its label describes it.
#[derive(Debug, Clone)]
pub struct NewPv {
    pub id: Uuid,
    pub device: String,
    /// Sectors.
    pub dev_size: u64,
    /// Sectors.
    pub pe_start: u64,
    /// Sectors usable for extents from pe_start on (device end or the second mda).
    pub data_sectors: u64,
}

/// Everything a new LV needs besides its size.
#[derive(Debug, Clone)]
pub struct NewLv {
    pub name: String,
    pub id: Uuid,
    pub tags: Vec<String>,
    pub creation_time: u64,
    pub creation_host: String,
}

fn pv_entry(key: String, p: &NewPv, extent_size: u32) -> Result<Pv, Error> {
    let pe_count = p.data_sectors / extent_size as u64;
    let pe_count = u32::try_from(pe_count)
        .map_err(|_| Error::Request(format!("{} has too many extents", p.device)))?;
    if pe_count == 0 {
        return Err(Error::Request(format!(
            "{} is smaller than one extent",
            p.device
        )));
    }
    Ok(Pv {
        key,
        id: p.id,
        device: Some(p.device.clone()),
        status: vec!["ALLOCATABLE".into()],
        flags: vec![],
        tags: vec![],
        dev_size: p.dev_size,
        pe_start: p.pe_start,
        pe_count,
        extras: vec![],
    })
}

/// A new VG (seqno 0; the first commit writes seqno 1).
pub fn new_vg(
    name: &str,
    id: Uuid,
    extent_size: u32,
    pvs: &[NewPv],
    tags: Vec<String>,
) -> Result<Vg, Error> {
    names::check_vg_name(name)?;
    if extent_size == 0
        || (!extent_size.is_power_of_two() && !extent_size.is_multiple_of(256))
        || extent_size < 8
    {
        return Err(Error::Request(format!(
            "extent size of {extent_size} sectors is not a power of 2 of at least 4 KiB"
        )));
    }
    for t in &tags {
        names::check_tag(t)?;
    }
    if pvs.is_empty() {
        return Err(Error::Request("a VG needs at least one PV".into()));
    }
    let pvs = pvs
        .iter()
        .enumerate()
        .map(|(i, p)| pv_entry(format!("pv{i}"), p, extent_size))
        .collect::<Result<Vec<_>, _>>()?;
    let vg = Vg {
        name: name.to_string(),
        id,
        seqno: 0,
        format: Some("lvm2".into()),
        status: vec!["RESIZEABLE".into(), "READ".into(), "WRITE".into()],
        flags: vec![],
        tags,
        system_id: None,
        lock_type: None,
        lock_args: None,
        extent_size,
        max_lv: 0,
        max_pv: 0,
        allocation_policy: None,
        profile: None,
        metadata_copies: Some(0),
        pvs,
        lvs: vec![],
        historical: None,
        historical_names: vec![],
        extras: vec![],
    };
    vg.validate()?;
    Ok(vg)
}

fn add_pvs_inner(vg: &mut Vg, pvs: &[NewPv]) -> Result<(), Error> {
    if vg.max_pv != 0 && vg.pvs.len() + pvs.len() > vg.max_pv as usize {
        return Err(Error::Request(format!(
            "VG {} allows at most {} PVs",
            vg.name, vg.max_pv
        )));
    }
    let mut next = 0;
    let mut out = vg.clone();
    for p in pvs {
        if out.pv_by_id(&p.id).is_some() {
            return Err(Error::Request(format!(
                "{} is already in VG {}",
                p.device, vg.name
            )));
        }
        while out.pv(&format!("pv{next}")).is_some() {
            next += 1;
        }
        out.pvs
            .push(pv_entry(format!("pv{next}"), p, vg.extent_size)?);
    }
    out.validate()?;
    *vg = out;
    Ok(())
}

fn managed_lv<'a>(vg: &'a mut Vg, name: &str) -> Result<&'a mut Lv, Error> {
    let vgname = vg.name.clone();
    let lv = vg
        .lv_mut(name)
        .ok_or_else(|| Error::Request(format!("logical volume {vgname}/{name} not found")))?;
    if !lv.managed() {
        return Err(Error::Request(format!("{vgname}/{name} has a segment type or fields ferrolvm does not manage; use lvm2 for it")));
    }
    Ok(lv)
}

fn create_lv_inner(
    vg: &mut Vg,
    new: NewLv,
    extents: u32,
    stripes: u32,
    stripe_size: Option<u32>,
    pvs: Option<&[String]>,
) -> Result<(), Error> {
    names::check_lv_name(&new.name)?;
    for t in &new.tags {
        names::check_tag(t)?;
    }
    if vg.lv(&new.name).is_some() || vg.historical_names.contains(&new.name) {
        return Err(Error::Request(format!(
            "logical volume {}/{} already exists",
            vg.name, new.name
        )));
    }
    if vg.max_lv != 0 && vg.visible_lv_count() >= vg.max_lv as usize {
        return Err(Error::Request(format!(
            "VG {} allows at most {} LVs",
            vg.name, vg.max_lv
        )));
    }
    let segments = alloc::allocate(
        vg,
        &Request {
            extents,
            stripes,
            stripe_size,
            pvs,
        },
        0,
        None,
    )?;
    let lv = Lv {
        name: new.name,
        id: new.id,
        status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
        flags: vec![],
        tags: new.tags,
        creation_time: Some(new.creation_time),
        creation_host: Some(new.creation_host),
        allocation_policy: None,
        read_ahead: None,
        major: None,
        minor: None,
        segments,
        verbatim: None,
        extras: vec![],
    };
    // LVM writes visible LVs before hidden ones.
    let at = vg
        .lvs
        .iter()
        .rposition(|l| l.visible())
        .map_or(0, |i| i + 1);
    vg.lvs.insert(at, lv);
    vg.validate()
}

fn extend_lv_inner(
    vg: &mut Vg,
    name: &str,
    new_extents: u32,
    pvs: Option<&[String]>,
) -> Result<(), Error> {
    let snapshot = vg.clone();
    let lv = managed_lv(vg, name)?;
    let cur = lv.extent_count();
    if new_extents <= cur {
        return Err(Error::Request(format!(
            "new size ({new_extents} extents) is not larger than the current {cur}"
        )));
    }
    let last = lv.segments.last().cloned();
    let stripes = last.as_ref().map_or(1, |s| s.areas.len() as u32);
    let stripe_size = last.as_ref().and_then(|s| s.stripe_size);
    let add = new_extents - cur;
    let add = add.div_ceil(stripes) * stripes;
    let segs = alloc::allocate(
        &snapshot,
        &Request {
            extents: add,
            stripes,
            stripe_size,
            pvs,
        },
        cur,
        last.as_ref(),
    )?;
    let lv = managed_lv(vg, name)?;
    let mut all = std::mem::take(&mut lv.segments);
    all.extend(segs);
    lv.segments = alloc::merge_adjacent(all);
    Ok(())
}

fn reduce_lv_inner(vg: &mut Vg, name: &str, new_extents: u32) -> Result<(), Error> {
    let lv = managed_lv(vg, name)?;
    let cur = lv.extent_count();
    if new_extents >= cur || new_extents == 0 {
        return Err(Error::Request(format!(
            "new size ({new_extents} extents) must be between 1 and {}",
            cur - 1
        )));
    }
    let mut keep = Vec::new();
    for mut seg in std::mem::take(&mut lv.segments) {
        if seg.start_extent >= new_extents {
            continue;
        }
        if seg.start_extent + seg.extent_count > new_extents {
            let n = new_extents - seg.start_extent;
            let stripes = seg.areas.len() as u32;
            if !n.is_multiple_of(stripes) {
                return Err(Error::Request(format!(
                    "{n} extents cannot be split over {stripes} stripes"
                )));
            }
            seg.extent_count = n;
        }
        keep.push(seg);
    }
    lv.segments = keep;
    vg.validate()
}

fn remove_lv_inner(vg: &mut Vg, name: &str) -> Result<(), Error> {
    managed_lv(vg, name)?;
    vg.lvs.retain(|l| l.name != name);
    Ok(())
}

fn rename_lv_inner(vg: &mut Vg, old: &str, new: &str) -> Result<(), Error> {
    names::check_lv_name(new)?;
    if vg.lv(new).is_some() || vg.historical_names.iter().any(|n| n == new) {
        return Err(Error::Request(format!(
            "logical volume {}/{new} already exists",
            vg.name
        )));
    }
    managed_lv(vg, old)?.name = new.to_string();
    Ok(())
}

fn add_lv_tags_inner(vg: &mut Vg, name: &str, tags: &[String]) -> Result<(), Error> {
    for t in tags {
        names::check_tag(t)?;
    }
    let lv = managed_lv(vg, name)?;
    for t in tags {
        if !lv.tags.contains(t) {
            lv.tags.push(t.clone());
        }
    }
    Ok(())
}

/// Runs `f` on a copy and keeps the result only if it succeeds and the VG
/// still validates: a refused change leaves the VG exactly as it was.
fn transact(vg: &mut Vg, f: impl FnOnce(&mut Vg) -> Result<(), Error>) -> Result<(), Error> {
    let mut copy = vg.clone();
    f(&mut copy)?;
    copy.validate()?;
    *vg = copy;
    Ok(())
}

/// Creates a linear (stripes = 1) or striped LV.
pub fn create_lv(
    vg: &mut Vg,
    new: NewLv,
    extents: u32,
    stripes: u32,
    stripe_size: Option<u32>,
    pvs: Option<&[String]>,
) -> Result<(), Error> {
    transact(vg, |v| {
        create_lv_inner(v, new, extents, stripes, stripe_size, pvs)
    })
}

/// Grows an LV to `new_extents`, with the stripe geometry of its last segment.
pub fn extend_lv(
    vg: &mut Vg,
    name: &str,
    new_extents: u32,
    pvs: Option<&[String]>,
) -> Result<(), Error> {
    transact(vg, |v| extend_lv_inner(v, name, new_extents, pvs))
}

/// Shrinks an LV to `new_extents` by dropping extents from its end.
pub fn reduce_lv(vg: &mut Vg, name: &str, new_extents: u32) -> Result<(), Error> {
    transact(vg, |v| reduce_lv_inner(v, name, new_extents))
}

pub fn remove_lv(vg: &mut Vg, name: &str) -> Result<(), Error> {
    transact(vg, |v| remove_lv_inner(v, name))
}

pub fn rename_lv(vg: &mut Vg, old: &str, new: &str) -> Result<(), Error> {
    transact(vg, |v| rename_lv_inner(v, old, new))
}

pub fn add_lv_tags(vg: &mut Vg, name: &str, tags: &[String]) -> Result<(), Error> {
    transact(vg, |v| add_lv_tags_inner(v, name, tags))
}

/// Adds PVs (vgextend).
pub fn add_pvs(vg: &mut Vg, pvs: &[NewPv]) -> Result<(), Error> {
    transact(vg, |v| add_pvs_inner(v, pvs))
}
