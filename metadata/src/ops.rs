//! Pure changes to a [`Vg`]: each checks its preconditions and leaves the VG
//! untouched when it fails. Seqno, text and writes are the commit planner's job.

use crate::alloc::{self, Request};
use crate::model::{Lv, Pv, Segment, ThinMessage, ThinSegment, Vg};
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
    if let Some(done) = thin_resize(vg, name, new_extents, true)? {
        return Ok(done);
    }
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
    if let Some(done) = thin_resize(vg, name, new_extents, false)? {
        return Ok(done);
    }
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
    match kind(vg, name)? {
        Kind::Thin => return remove_thin(vg, name),
        Kind::Pool => return remove_thin_pool(vg, name),
        Kind::Internal => return Err(internal(vg, name)),
        Kind::Plain => {}
    }
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
    match kind(vg, old)? {
        Kind::Pool => {
            return Err(Error::Request(format!(
                "renaming thin pools is not supported; {}/{old} keeps its name",
                vg.name
            )))
        }
        Kind::Internal => return Err(internal(vg, old)),
        Kind::Thin => {
            // Snapshots name their origin, and a queued create names the LV.
            for lv in vg.lvs.iter_mut() {
                for seg in lv.segments.iter_mut() {
                    match &mut seg.thin {
                        Some(ThinSegment::Thin {
                            origin: Some(o), ..
                        }) if o == old => *o = new.to_string(),
                        Some(ThinSegment::Pool { messages, .. }) => {
                            for m in messages.iter_mut() {
                                if let ThinMessage::Create { lv } = m {
                                    if lv == old {
                                        *lv = new.to_string();
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Kind::Plain => {}
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

// ---------------------------------------------------------------------------
// Thin provisioning, with lvm2's layout and transaction protocol: every
// change to a pool's thin devices bumps the pool's transaction_id and queues
// a message; the caller commits, has the kernel apply the messages, and
// commits again with them cleared (`clear_thin_messages`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Pool,
    Thin,
    /// Hidden sub-LVs (`_tdata`, `_tmeta`, `lvol0_pmspare`): never changed directly.
    Internal,
}

fn kind(vg: &Vg, name: &str) -> Result<Kind, Error> {
    let lv = vg
        .lv(name)
        .ok_or_else(|| Error::Request(format!("logical volume {}/{name} not found", vg.name)))?;
    Ok(match lv.segments.first().and_then(|s| s.thin.as_ref()) {
        Some(ThinSegment::Pool { .. }) => Kind::Pool,
        Some(ThinSegment::Thin { .. }) => Kind::Thin,
        None if !lv.visible() => Kind::Internal,
        None => Kind::Plain,
    })
}

fn internal(vg: &Vg, name: &str) -> Error {
    Error::Request(format!(
        "{}/{name} is an internal LV of a thin pool; change the pool instead",
        vg.name
    ))
}

/// Thin LVs resize by their virtual size alone; pools cannot be resized yet.
fn thin_resize(vg: &mut Vg, name: &str, extents: u32, grow: bool) -> Result<Option<()>, Error> {
    match kind(vg, name)? {
        Kind::Plain => Ok(None),
        Kind::Internal => Err(internal(vg, name)),
        Kind::Pool => Err(Error::Request(format!(
            "resizing thin pool {}/{name} is not supported yet",
            vg.name
        ))),
        Kind::Thin => {
            let lv = managed_lv(vg, name)?;
            let cur = lv.extent_count();
            if extents == 0 || (grow && extents <= cur) || (!grow && extents >= cur) {
                return Err(Error::Request(format!(
                    "new size ({extents} extents) does not {} the current {cur}",
                    if grow { "exceed" } else { "undercut" }
                )));
            }
            lv.segments[0].extent_count = extents;
            Ok(Some(()))
        }
    }
}

/// How a new thin pool is laid out.
#[derive(Debug, Clone)]
pub struct NewPool {
    pub lv: NewLv,
    /// Extents of the data LV (the pool's size).
    pub data_extents: u32,
    /// Extents of the metadata LV.
    pub meta_extents: u32,
    /// Sectors; a multiple of 128 (64 KiB).
    pub chunk_size: u32,
    pub zero_new_blocks: bool,
    pub discards: Option<String>,
    pub tdata_id: Uuid,
    pub tmeta_id: Uuid,
    pub spare_id: Uuid,
}

/// Metadata LV size lvm2 chooses: 64 bytes per data chunk, at least 2 MiB,
/// in whole extents.
pub fn thin_metadata_extents(data_extents: u32, extent_size: u32, chunk_size: u32) -> u32 {
    let data_sectors = data_extents as u64 * extent_size as u64;
    let bytes = (data_sectors / chunk_size.max(1) as u64 * 64).max(2 << 20);
    (bytes.div_ceil(512).div_ceil(extent_size as u64)) as u32
}

fn hidden_lv(
    name: String,
    id: Uuid,
    extents: u32,
    segments: Vec<Segment>,
    creation_time: u64,
    host: &str,
) -> Lv {
    let _ = extents;
    Lv {
        name,
        id,
        status: vec!["READ".into(), "WRITE".into()],
        flags: vec![],
        tags: vec![],
        creation_time: Some(creation_time),
        creation_host: Some(host.to_string()),
        allocation_policy: None,
        read_ahead: None,
        major: None,
        minor: None,
        segments,
        verbatim: None,
        extras: vec![],
    }
}

const SPARE: &str = "lvol0_pmspare";

fn create_thin_pool_inner(vg: &mut Vg, p: NewPool, pvs: Option<&[String]>) -> Result<(), Error> {
    let name = p.lv.name.clone();
    names::check_lv_name(&name)?;
    if p.chunk_size < 128 || !p.chunk_size.is_multiple_of(128) || p.chunk_size > 2_097_152 {
        return Err(Error::Request(format!("thin pool chunk size of {} sectors must be a multiple of 64 KiB between 64 KiB and 1 GiB", p.chunk_size)));
    }
    for n in [
        name.clone(),
        format!("{name}_tdata"),
        format!("{name}_tmeta"),
    ] {
        if vg.lv(&n).is_some() {
            return Err(Error::Request(format!(
                "logical volume {}/{n} already exists",
                vg.name
            )));
        }
    }
    let req = |extents| Request {
        extents,
        stripes: 1,
        stripe_size: None,
        pvs,
    };
    let (time, host) = (p.lv.creation_time, p.lv.creation_host.clone());
    // Like lvm2: the metadata spare first (as large as the largest metadata LV), then data, then metadata.
    let spare_len = vg.lv(SPARE).map(|l| l.extent_count());
    match spare_len {
        None => {
            let segs = alloc::allocate(vg, &req(p.meta_extents), 0, None)?;
            vg.lvs.push(hidden_lv(
                SPARE.into(),
                p.spare_id,
                p.meta_extents,
                segs,
                time,
                &host,
            ));
        }
        Some(n) if n < p.meta_extents => extend_lv_plain(vg, SPARE, p.meta_extents, pvs)?,
        Some(_) => {}
    }
    let tdata = alloc::allocate(vg, &req(p.data_extents), 0, None)?;
    vg.lvs.push(hidden_lv(
        format!("{name}_tdata"),
        p.tdata_id,
        p.data_extents,
        tdata,
        time,
        &host,
    ));
    let tmeta = alloc::allocate(vg, &req(p.meta_extents), 0, None)?;
    let tdata_lv = vg.lvs.pop().expect("just pushed");
    vg.lvs.push(hidden_lv(
        format!("{name}_tmeta"),
        p.tmeta_id,
        p.meta_extents,
        tmeta,
        time,
        &host,
    ));
    vg.lvs.push(tdata_lv);
    let pool = Lv {
        name: name.clone(),
        id: p.lv.id,
        status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
        flags: vec![],
        tags: p.lv.tags,
        creation_time: Some(time),
        creation_host: Some(host),
        allocation_policy: None,
        read_ahead: None,
        major: None,
        minor: None,
        segments: vec![Segment {
            start_extent: 0,
            extent_count: p.data_extents,
            segtype: "thin-pool".into(),
            stripe_size: None,
            areas: vec![],
            tags: vec![],
            fields: vec![],
            thin: Some(ThinSegment::Pool {
                metadata: format!("{name}_tmeta"),
                pool: format!("{name}_tdata"),
                transaction_id: 0,
                chunk_size: p.chunk_size,
                discards: p.discards,
                zero_new_blocks: p.zero_new_blocks,
                messages: vec![],
            }),
        }],
        verbatim: None,
        extras: vec![],
    };
    let at = vg
        .lvs
        .iter()
        .rposition(|l| l.visible())
        .map_or(0, |i| i + 1);
    vg.lvs.insert(at, pool);
    Ok(())
}

fn extend_lv_plain(
    vg: &mut Vg,
    name: &str,
    extents: u32,
    pvs: Option<&[String]>,
) -> Result<(), Error> {
    let snapshot = vg.clone();
    let lv = vg
        .lv(name)
        .ok_or_else(|| Error::Request(format!("{name} not found")))?;
    let cur = lv.extent_count();
    let last = lv.segments.last().cloned();
    let segs = alloc::allocate(
        &snapshot,
        &Request {
            extents: extents - cur,
            stripes: 1,
            stripe_size: None,
            pvs,
        },
        cur,
        last.as_ref(),
    )?;
    let lv = vg.lv_mut(name).expect("exists");
    let mut all = std::mem::take(&mut lv.segments);
    all.extend(segs);
    lv.segments = alloc::merge_adjacent(all);
    Ok(())
}

fn pool_mut<'a>(vg: &'a mut Vg, pool: &str) -> Result<&'a mut ThinSegment, Error> {
    let vgname = vg.name.clone();
    let lv = vg
        .lv_mut(pool)
        .ok_or_else(|| Error::Request(format!("thin pool {vgname}/{pool} not found")))?;
    match lv.segments.first_mut().and_then(|s| s.thin.as_mut()) {
        Some(t @ ThinSegment::Pool { .. }) => Ok(t),
        _ => Err(Error::Request(format!(
            "{vgname}/{pool} is not a thin pool"
        ))),
    }
}

/// Pending messages of a pool: the caller must have the kernel apply them
/// before queuing more, as lvm2 does.
pub fn pending_thin_messages(vg: &Vg, pool: &str) -> Vec<ThinMessage> {
    match vg
        .lv(pool)
        .and_then(|l| l.segments.first())
        .and_then(|s| s.thin.as_ref())
    {
        Some(ThinSegment::Pool { messages, .. }) => messages.clone(),
        _ => vec![],
    }
}

fn queue(vg: &mut Vg, pool: &str, msg: ThinMessage) -> Result<u64, Error> {
    let vgname = vg.name.clone();
    let ThinSegment::Pool {
        transaction_id,
        messages,
        ..
    } = pool_mut(vg, pool)?
    else {
        unreachable!("pool_mut returns pools")
    };
    if !messages.is_empty() {
        return Err(Error::Request(format!("thin pool {vgname}/{pool} has messages the kernel has not applied yet; activate the pool first")));
    }
    let before = *transaction_id;
    *transaction_id += 1;
    messages.push(msg);
    Ok(before)
}

/// Thin LVs of `pool`, with their device ids.
pub fn thin_lvs<'a>(vg: &'a Vg, pool: &str) -> Vec<(&'a Lv, u32)> {
    vg.lvs
        .iter()
        .filter_map(|l| match l.segments.first().and_then(|s| s.thin.as_ref()) {
            Some(ThinSegment::Thin {
                thin_pool,
                device_id,
                ..
            }) if thin_pool == pool => Some((l, *device_id)),
            _ => None,
        })
        .collect()
}

fn create_thin_inner(
    vg: &mut Vg,
    pool: &str,
    new: NewLv,
    extents: u32,
    origin: Option<&str>,
) -> Result<(), Error> {
    names::check_lv_name(&new.name)?;
    if vg.lv(&new.name).is_some() || vg.historical_names.contains(&new.name) {
        return Err(Error::Request(format!(
            "logical volume {}/{} already exists",
            vg.name, new.name
        )));
    }
    let (extents, flags) = match origin {
        Some(o) => {
            let (ol, _) = thin_lvs(vg, pool)
                .into_iter()
                .find(|(l, _)| l.name == o)
                .ok_or_else(|| Error::Request(format!("{o} is not a thin LV in pool {pool}")))?;
            // lvm2 skips thin snapshots on activation unless asked (-K).
            (ol.extent_count(), vec!["ACTIVATION_SKIP".to_string()])
        }
        None => (extents, vec![]),
    };
    if extents == 0 {
        return Err(Error::Request("a thin LV needs a virtual size".into()));
    }
    let device_id = thin_lvs(vg, pool)
        .iter()
        .map(|(_, id)| *id)
        .max()
        .unwrap_or(0)
        + 1;
    if device_id >= 1 << 24 {
        return Err(Error::Request(format!(
            "thin pool {pool} has run out of device ids"
        )));
    }
    let transaction_id = queue(
        vg,
        pool,
        ThinMessage::Create {
            lv: new.name.clone(),
        },
    )?;
    let lv = Lv {
        name: new.name,
        id: new.id,
        status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
        flags,
        tags: new.tags,
        creation_time: Some(new.creation_time),
        creation_host: Some(new.creation_host),
        allocation_policy: None,
        read_ahead: None,
        major: None,
        minor: None,
        segments: vec![Segment {
            start_extent: 0,
            extent_count: extents,
            segtype: "thin".into(),
            stripe_size: None,
            areas: vec![],
            tags: vec![],
            fields: vec![],
            thin: Some(ThinSegment::Thin {
                thin_pool: pool.to_string(),
                transaction_id,
                device_id,
                origin: origin.map(str::to_string),
                external_origin: None,
            }),
        }],
        verbatim: None,
        extras: vec![],
    };
    let at = vg
        .lvs
        .iter()
        .rposition(|l| l.visible())
        .map_or(0, |i| i + 1);
    vg.lvs.insert(at, lv);
    Ok(())
}

fn remove_thin(vg: &mut Vg, name: &str) -> Result<(), Error> {
    let lv = vg.lv(name).expect("kind() found it");
    let Some(ThinSegment::Thin {
        thin_pool,
        device_id,
        ..
    }) = lv.segments[0].thin.clone()
    else {
        unreachable!("kind() said thin")
    };
    queue(vg, &thin_pool, ThinMessage::Delete { device_id })?;
    // Snapshots of it become plain thin LVs, as in lvm2.
    for l in vg.lvs.iter_mut() {
        if let Some(ThinSegment::Thin { origin, .. }) =
            l.segments.first_mut().and_then(|s| s.thin.as_mut())
        {
            if origin.as_deref() == Some(name) {
                *origin = None;
            }
        }
    }
    vg.lvs.retain(|l| l.name != name);
    Ok(())
}

fn remove_thin_pool(vg: &mut Vg, name: &str) -> Result<(), Error> {
    let thins = thin_lvs(vg, name);
    if !thins.is_empty() {
        return Err(Error::Request(format!(
            "thin pool {}/{name} still holds {} thin LV(s); remove them first",
            vg.name,
            thins.len()
        )));
    }
    let (tdata, tmeta) = (format!("{name}_tdata"), format!("{name}_tmeta"));
    vg.lvs
        .retain(|l| l.name != name && l.name != tdata && l.name != tmeta);
    // The spare goes with the last pool.
    if !vg.lvs.iter().any(|l| {
        matches!(
            l.segments.first().and_then(|s| s.thin.as_ref()),
            Some(ThinSegment::Pool { .. })
        )
    }) {
        vg.lvs.retain(|l| l.name != SPARE);
    }
    Ok(())
}

/// A thin pool with its data, metadata and (if needed) spare LVs.
pub fn create_thin_pool(vg: &mut Vg, p: NewPool, pvs: Option<&[String]>) -> Result<(), Error> {
    transact(vg, |v| create_thin_pool_inner(v, p, pvs))
}

/// A thin LV of `extents` virtual extents, or a snapshot of `origin` (same
/// size); queues the pool's `create` message.
pub fn create_thin(
    vg: &mut Vg,
    pool: &str,
    new: NewLv,
    extents: u32,
    origin: Option<&str>,
) -> Result<(), Error> {
    transact(vg, |v| create_thin_inner(v, pool, new, extents, origin))
}

/// Drops a pool's queued messages once the kernel has applied them.
pub fn clear_thin_messages(vg: &mut Vg, pool: &str) -> Result<(), Error> {
    transact(vg, |v| {
        if let ThinSegment::Pool { messages, .. } = pool_mut(v, pool)? {
            messages.clear();
        }
        Ok(())
    })
}

/// Several thin LVs in one pool transaction: one transaction-id bump, one
/// queued `create` message each (lvm2's format allows any number).
pub fn create_thins(vg: &mut Vg, pool: &str, items: Vec<(NewLv, u32)>) -> Result<(), Error> {
    transact(vg, |v| {
        let mut opened = false;
        for (new, extents) in items {
            if !opened {
                create_thin_inner(v, pool, new, extents, None)?;
                opened = true;
                continue;
            }
            // Join the transaction the first create opened: step back to its
            // id with nothing queued, create, then restore the earlier messages.
            let ThinSegment::Pool {
                transaction_id,
                messages,
                ..
            } = pool_mut(v, pool)?
            else {
                unreachable!("pool_mut returns pools")
            };
            let earlier = std::mem::take(messages);
            *transaction_id -= 1;
            create_thin_inner(v, pool, new, extents, None)?;
            let ThinSegment::Pool { messages, .. } = pool_mut(v, pool)? else {
                unreachable!("pool_mut returns pools")
            };
            let mut all = earlier;
            all.append(messages);
            *messages = all;
        }
        Ok(())
    })
}
