//! The LV commands: `lvcreate` (linear, striped, thin pools, thin LVs and
//! snapshots), `lvremove`, `lvchange`, `vgchange`, `lvextend`, `lvresize`,
//! `lvrename`, mapped onto `lvm::volumes`.

use ferrolvm_metadata::ops::{self, NewLv};
use ferrolvm_metadata::Vg;

use super::args::LvcreateArgs;
use super::report::Units;
use super::usage;
use crate::lvm::host::Host;
use crate::lvm::session;
use crate::lvm::size::{parse_amount, parse_size, to_extents, Sign};
use crate::lvm::volumes;
use crate::lvm::{LvmError, Result};

fn split_lv(arg: &str) -> Result<(String, String)> {
    let a = arg.trim_start_matches("/dev/");
    a.split_once('/')
        .map(|(v, l)| (v.to_string(), l.to_string()))
        .ok_or_else(|| usage(format!("{arg:?}: please give VG/LV")))
}

fn pv_keys(
    vg: &Vg,
    scan: &crate::lvm::scan::Scan,
    paths: &[String],
) -> Result<Option<Vec<String>>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let found = scan
        .vg(&vg.name)
        .ok_or_else(|| LvmError::VgNotFound(vg.name.clone()))?;
    let mut keys = Vec::new();
    for p in paths {
        let dev = scan
            .device_index(std::path::Path::new(p))
            .ok_or_else(|| usage(format!("device {p} not found")))?;
        let pv = vg
            .pvs
            .iter()
            .find(|pv| found.pv_devs.get(&pv.id) == Some(&dev))
            .ok_or_else(|| usage(format!("{p} is not in VG {}", vg.name)))?;
        keys.push(pv.key.clone());
    }
    Ok(Some(keys))
}

/// `lvcreate` for thin pools (`--type thin-pool`, `-T VG/POOL -L`), thin
/// LVs (`-T VG/POOL -V`, `--thinpool`) and thin snapshots (`-s VG/THIN`).
#[allow(clippy::too_many_arguments)]
fn thin_create(
    host: &Host,
    first: &str,
    name: Option<String>,
    snapshot: bool,
    pool: bool,
    thinpool: Option<String>,
    virtualsize: Option<String>,
    size: Option<String>,
    extents: Option<String>,
    chunksize: Option<String>,
    tags: Vec<String>,
    activate: bool,
    ignore_skip: bool,
) -> Result<()> {
    let (vgname, named) = match first.split_once('/') {
        Some((v, l)) => (v.to_string(), Some(l.to_string())),
        None => (first.to_string(), None),
    };
    let default_name = |vg: &Vg| {
        (0..)
            .map(|i| format!("lvol{i}"))
            .find(|c| vg.lv(c).is_none())
            .unwrap_or_default()
    };
    let new_lv = |name: String| NewLv {
        name,
        id: session::random_uuid(),
        tags: tags.clone(),
        creation_time: session::now(),
        creation_host: host.hostname.clone(),
    };
    let mut created = String::new();
    if pool {
        let (_, amount) = parse_amount(size.as_deref(), extents.as_deref())?;
        let chunk = match chunksize {
            Some(c) => u32::try_from(parse_size(&c, 'k')?.1 / 512)
                .map_err(|_| usage("chunk size too large"))?,
            None => 128,
        };
        volumes::create_pool(host, &vgname, activate, |vg, _| {
            created = name
                .clone()
                .or(named.clone())
                .unwrap_or_else(|| default_name(vg));
            let data =
                u32::try_from(to_extents(vg, amount)).map_err(|_| usage("size too large"))?;
            let meta = ferrolvm_metadata::ops::thin_metadata_extents(data, vg.extent_size, chunk);
            Ok((
                ferrolvm_metadata::ops::NewPool {
                    lv: new_lv(created.clone()),
                    data_extents: data,
                    meta_extents: meta,
                    chunk_size: chunk,
                    zero_new_blocks: true,
                    discards: Some("passdown".into()),
                    tdata_id: session::random_uuid(),
                    tmeta_id: session::random_uuid(),
                    spare_id: session::random_uuid(),
                },
                None,
            ))
        })?;
        println!("  Logical volume \"{created}\" created.");
        return Ok(());
    }
    let (pool_name, origin) = if snapshot {
        let origin = named.ok_or_else(|| usage("lvcreate -s needs VG/THIN_LV"))?;
        (None, Some(origin))
    } else {
        (
            Some(
                thinpool
                    .or(named)
                    .ok_or_else(|| usage("give the pool as VG/POOL or --thinpool POOL"))?,
            ),
            None,
        )
    };
    let probe = session::Session::open(host, &vgname)?;
    let pool_name = match (&pool_name, &origin) {
        (Some(p), _) => p.clone(),
        (None, Some(o)) => match probe
            .vg
            .lv(o)
            .and_then(|l| l.segments.first())
            .and_then(|s| s.thin.clone())
        {
            Some(ferrolvm_metadata::ThinSegment::Thin { thin_pool, .. }) => thin_pool,
            _ => {
                return Err(usage(format!(
                    "{vgname}/{o} is not a thin LV; ferrolvm snapshots thin LVs only"
                )))
            }
        },
        (None, None) => unreachable!(),
    };
    drop(probe);
    let virtual_bytes = match &virtualsize {
        Some(v) => parse_size(v, 'm')?.1,
        None if origin.is_some() => 0,
        None => return Err(usage("a thin LV needs -V SIZE")),
    };
    // Snapshots carry lvm2's activation-skip flag: active only with -K.
    let activate = activate && (origin.is_none() || ignore_skip);
    volumes::create_thin(
        host,
        &vgname,
        &pool_name,
        origin.as_deref(),
        activate,
        |vg| {
            created = name.clone().unwrap_or_else(|| default_name(vg));
            let es = vg.extent_size as u64 * 512;
            let n =
                u32::try_from(virtual_bytes.div_ceil(es)).map_err(|_| usage("size too large"))?;
            Ok((new_lv(created.clone()), n))
        },
    )?;
    println!("  Logical volume \"{created}\" created.");
    Ok(())
}

fn parse_yn(v: &str, flag: &str) -> Result<bool> {
    match v {
        "y" | "yes" | "ay" => Ok(true),
        "n" | "no" => Ok(false),
        _ => Err(usage(format!("{flag} takes y or n, not {v:?}"))),
    }
}

pub fn resize(
    host: &Host,
    size: Option<String>,
    extents: Option<String>,
    args: &[String],
    extend_only: bool,
) -> Result<()> {
    let (first, pvs) = args
        .split_first()
        .ok_or_else(|| usage("please give VG/LV"))?;
    let (vgname, lvname) = split_lv(first)?;
    let (sign, amount) = parse_amount(size.as_deref(), extents.as_deref())?;
    if extend_only && sign == Sign::Minus {
        return Err(usage("lvextend cannot shrink; use lvresize"));
    }
    let mut es = 0u64;
    let (cur, now) = volumes::resize(host, &vgname, &lvname, |vg, scan, cur| {
        let keys = pv_keys(vg, scan, pvs)?;
        let cur = cur as u64;
        let n = to_extents(vg, amount);
        let target = match sign {
            Sign::Abs => n,
            Sign::Plus => cur + n,
            Sign::Minus => cur
                .checked_sub(n)
                .filter(|&t| t > 0)
                .ok_or_else(|| usage("cannot shrink to zero or below"))?,
        };
        if extend_only && target < cur {
            return Err(usage(format!(
                "new size ({target} extents) is smaller than the current {cur}; use lvresize"
            )));
        }
        es = vg.extent_size as u64 * 512;
        let target = u32::try_from(target).map_err(|_| usage("size too large"))?;
        Ok((target, keys))
    })?;
    let h = Units {
        unit: 'h',
        suffix: true,
    };
    let (cur, now) = (cur as u64, now as u64);
    println!("  Size of logical volume {vgname}/{lvname} changed from {} ({cur} extents) to {} ({now} extents).", h.fmt(cur * es), h.fmt(now * es));
    println!("  Logical volume {vgname}/{lvname} successfully resized.");
    Ok(())
}

pub fn lvcreate(host: &Host, a: LvcreateArgs) -> Result<()> {
    let LvcreateArgs {
        name,
        size,
        extents,
        stripes,
        stripe_size,
        tags,
        activate,
        zero,
        segtype,
        snapshot,
        thin,
        thinpool,
        virtualsize,
        chunksize,
        ignore_skip,
        args,
    } = a;
    let first = args
        .first()
        .map(|a| a.trim_start_matches("/dev/").to_string())
        .unwrap_or_default();
    let wants_pool = segtype.as_deref() == Some("thin-pool") || (thin && virtualsize.is_none());
    let wants_thin = !snapshot
        && !wants_pool
        && (virtualsize.is_some() || thinpool.is_some() || segtype.as_deref() == Some("thin"));
    if snapshot || wants_thin || wants_pool {
        let activate = parse_yn(&activate, "-a")?;
        return thin_create(
            host,
            &first,
            name,
            snapshot,
            wants_pool,
            thinpool,
            virtualsize,
            size,
            extents,
            chunksize,
            tags,
            activate,
            ignore_skip,
        );
    }
    if let Some(t) = segtype
        .as_deref()
        .filter(|t| !matches!(*t, "linear" | "striped"))
    {
        return Err(usage(format!(
            "segment type {t} is not supported (linear, striped, thin-pool and thin are)"
        )));
    }
    let activate = parse_yn(&activate, "-a")?;
    let zero = match zero.as_deref() {
        Some(z) => parse_yn(z, "-Z")?,
        None => activate,
    };
    let (vgname, pvs) = args
        .split_first()
        .ok_or_else(|| usage("please give a VG"))?;
    let vgname = vgname
        .trim_start_matches("/dev/")
        .trim_end_matches('/')
        .to_string();
    let (sign, amount) = parse_amount(size.as_deref(), extents.as_deref())?;
    if sign != Sign::Abs {
        return Err(usage("lvcreate takes an absolute size"));
    }
    let stripes = stripes.unwrap_or(1).max(1);
    let stripe_size = match (stripes, stripe_size) {
        (1, _) => None,
        (_, Some(s)) => Some(
            u32::try_from(parse_size(&s, 'k')?.1 / 512)
                .map_err(|_| usage("stripe size too large"))?,
        ),
        (_, None) => Some(128),
    };
    let mut created = String::new();
    volumes::create(host, &vgname, activate, |vg, scan| {
        let keys = pv_keys(vg, scan, pvs)?;
        let n = to_extents(vg, amount).div_ceil(stripes as u64) * stripes as u64;
        let n = u32::try_from(n).map_err(|_| usage("size too large"))?;
        created = match &name {
            Some(n) => n.clone(),
            None => (0..)
                .map(|i| format!("lvol{i}"))
                .find(|c| vg.lv(c).is_none())
                .unwrap_or_default(),
        };
        Ok(volumes::LvSpec {
            new: NewLv {
                name: created.clone(),
                id: session::random_uuid(),
                tags: tags.clone(),
                creation_time: session::now(),
                creation_host: host.hostname.clone(),
            },
            extents: n,
            stripes,
            stripe_size,
            pvs: keys,
            zero,
        })
    })?;
    println!("  Logical volume \"{created}\" created.");
    Ok(())
}

pub fn lvremove(host: &Host, lvs: &[String], discard: bool) -> Result<()> {
    for arg in lvs {
        let (vg, lv) = split_lv(arg)?;
        volumes::remove(host, &vg, &lv, discard)?;
        println!("  Logical volume \"{lv}\" successfully removed.");
    }
    Ok(())
}

pub fn lvchange(host: &Host, activate: &str, ignore_skip: bool, lvs: &[String]) -> Result<()> {
    let on = parse_yn(activate, "-a")?;
    for arg in lvs {
        let (vg, lv) = split_lv(arg)?;
        // Naming an LV explicitly activates it, as lvm2 does, unless it is marked to be skipped.
        volumes::set_active(host, &vg, Some(&[lv]), on, ignore_skip)?;
    }
    Ok(())
}

pub fn vgchange(host: &Host, activate: &str, ignore_skip: bool, vgs: &[String]) -> Result<()> {
    let on = parse_yn(activate, "-a")?;
    for vg in vgs {
        let done = volumes::set_active(host, vg, None, on, ignore_skip)?;
        let n = if on { done.len() } else { 0 };
        println!("  {n} logical volume(s) in volume group \"{vg}\" now active");
    }
    Ok(())
}

pub fn lvrename(host: &Host, args: &[String]) -> Result<()> {
    let (vg, old, new) = match args {
        [vg, old, new] => (vg.clone(), old.clone(), new.clone()),
        [a, b] => {
            let (vg, old) = split_lv(a)?;
            let new = match b.split_once('/') {
                Some((v2, n)) if v2 == vg => n.to_string(),
                Some(_) => return Err(usage("old and new LV must be in the same VG")),
                None => b.clone(),
            };
            (vg, old, new)
        }
        _ => return Err(usage("lvrename VG OLD NEW")),
    };
    session::modify_vg(host, &vg, |v, _| {
        ops::rename_lv(v, &old, &new)?;
        Ok(format!("Write from ferrolvm lvrename {vg}/{old} {new}."))
    })?;
    println!("  Renamed \"{old}\" to \"{new}\" in volume group \"{vg}\"");
    Ok(())
}
