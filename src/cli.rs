//! The lvm-compatible command line: same command names, flags and meanings
//! as lvm2 for what ferrolvm implements.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ferrolvm_metadata::ops::{self, NewLv};
use ferrolvm_metadata::Vg;

use crate::engine::{self, EngineError, PvLayout, Result};
use crate::host::Host;
use crate::lock::Mode;
use crate::report::{self, Units};
use crate::scan::scan_paths;
use crate::volumes;

#[derive(Parser, Debug)]
#[command(
    name = "ferrolvm",
    version,
    about = "LVM2-compatible volume management without the lvm tools"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// Only use these devices (comma-separated or repeated), like lvm's --devices.
    #[arg(long, value_delimiter = ',', global = true)]
    pub devices: Vec<PathBuf>,
    /// Accepted for command-line compatibility with lvm2; ferrolvm never needs it.
    #[arg(long, global = true, hide = true)]
    pub driverloaded: Option<String>,
    /// Answer yes to prompts (ferrolvm never prompts).
    #[arg(short = 'y', long = "yes", global = true)]
    pub yes: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ReportArgs {
    /// `json` or `basic`.
    #[arg(long)]
    pub reportformat: Option<String>,
    /// Fields, comma-separated; a leading `+` adds to the defaults.
    #[arg(short = 'o', long = "options")]
    pub options: Option<String>,
    /// h, b, s, k, m, g, t, p, e.
    #[arg(long)]
    pub units: Option<char>,
    #[arg(long)]
    pub nosuffix: bool,
    #[arg(long)]
    pub noheadings: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PvLayoutArgs {
    /// Size of each metadata area (lvm size syntax, default unit MiB).
    #[arg(long)]
    pub metadatasize: Option<String>,
    /// Metadata areas per PV: 0, 1 or 2.
    #[arg(long, default_value_t = 1)]
    pub pvmetadatacopies: u32,
    /// Alignment of the data area start (lvm size syntax, default unit KiB; default 1 MiB).
    #[arg(long)]
    pub dataalignment: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Initialise devices as physical volumes.
    Pvcreate {
        #[command(flatten)]
        layout: PvLayoutArgs,
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        #[arg(required = true)]
        pvs: Vec<PathBuf>,
    },
    /// Create a volume group.
    Vgcreate {
        /// Extent size (default 4 MiB).
        #[arg(short = 's', long = "physicalextentsize")]
        extent_size: Option<String>,
        #[arg(long = "addtag")]
        tags: Vec<String>,
        #[command(flatten)]
        layout: PvLayoutArgs,
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        vg: String,
        #[arg(required = true)]
        pvs: Vec<PathBuf>,
    },
    /// Add physical volumes to a volume group.
    Vgextend {
        #[command(flatten)]
        layout: PvLayoutArgs,
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        vg: String,
        #[arg(required = true)]
        pvs: Vec<PathBuf>,
    },
    /// Remove a volume group (with -f, also its inactive LVs).
    Vgremove {
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        #[arg(required = true)]
        vgs: Vec<String>,
    },
    Pvs {
        #[command(flatten)]
        report: ReportArgs,
        names: Vec<String>,
    },
    Vgs {
        #[command(flatten)]
        report: ReportArgs,
        names: Vec<String>,
    },
    Lvs {
        #[command(flatten)]
        report: ReportArgs,
        /// Include hidden LVs.
        #[arg(short = 'a', long = "all")]
        all: bool,
        names: Vec<String>,
    },
    /// Create a linear or striped logical volume.
    Lvcreate {
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
        #[arg(short = 'L', long = "size")]
        size: Option<String>,
        #[arg(short = 'l', long = "extents")]
        extents: Option<String>,
        #[arg(short = 'i', long = "stripes")]
        stripes: Option<u32>,
        #[arg(short = 'I', long = "stripesize")]
        stripe_size: Option<String>,
        #[arg(long = "addtag")]
        tags: Vec<String>,
        /// y or n.
        #[arg(short = 'a', long = "activate", default_value = "y")]
        activate: String,
        /// Thin: with -V, a thin LV in the pool named by VG/POOL; with -L, a new pool.
        #[arg(short = 'T', long = "thin")]
        thin: bool,
        #[arg(long = "thinpool")]
        thinpool: Option<String>,
        /// Virtual size of a thin LV.
        #[arg(short = 'V', long = "virtualsize")]
        virtualsize: Option<String>,
        /// Thin pool chunk size (default 64 KiB).
        #[arg(short = 'c', long = "chunksize")]
        chunksize: Option<String>,
        /// Activate even if the LV is marked to be skipped (thin snapshots are).
        #[arg(short = 'K', long = "ignoreactivationskip")]
        ignore_skip: bool,
        /// Zero the first 4 KiB (y|n); only meaningful with activation.
        #[arg(short = 'Z', long = "zero")]
        zero: Option<String>,
        #[arg(long = "type")]
        segtype: Option<String>,
        #[arg(short = 's', long = "snapshot")]
        snapshot: bool,
        /// VG, then optionally the PVs to allocate from.
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Remove logical volumes.
    Lvremove {
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        /// Discard the freed extents (BLKDISCARD) after removal.
        #[arg(long)]
        discard: bool,
        #[arg(required = true)]
        lvs: Vec<String>,
    },
    /// Grow a logical volume.
    Lvextend {
        #[arg(short = 'L', long = "size")]
        size: Option<String>,
        #[arg(short = 'l', long = "extents")]
        extents: Option<String>,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Grow or shrink a logical volume.
    Lvresize {
        #[arg(short = 'L', long = "size", allow_hyphen_values = true)]
        size: Option<String>,
        #[arg(short = 'l', long = "extents", allow_hyphen_values = true)]
        extents: Option<String>,
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Rename a logical volume: `VG OLD NEW`, `VG/OLD NEW` or `VG/OLD VG/NEW`.
    Lvrename {
        #[arg(required = true, num_args = 2..=3)]
        args: Vec<String>,
    },
    /// Activate or deactivate logical volumes.
    Lvchange {
        /// y or n.
        #[arg(short = 'a', long = "activate")]
        activate: String,
        /// Activate even if the LV is marked to be skipped (thin snapshots are).
        #[arg(short = 'K', long = "ignoreactivationskip")]
        ignore_skip: bool,
        #[arg(required = true)]
        lvs: Vec<String>,
    },
    /// Activate or deactivate every linear and striped LV of volume groups.
    Vgchange {
        /// y or n.
        #[arg(short = 'a', long = "activate")]
        activate: String,
        /// Also activate LVs marked to be skipped.
        #[arg(short = 'K', long = "ignoreactivationskip")]
        ignore_skip: bool,
        #[arg(required = true)]
        vgs: Vec<String>,
    },
    /// Serve CSI Identity and Node (and, with --standalone, Controller) on a Unix socket.
    Node {
        /// Device classes, in TopoLVM's lvmd.yaml shape.
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "node-name")]
        node_name: String,
        /// unix:///path/to/csi.sock
        #[arg(long = "csi-endpoint")]
        csi_endpoint: String,
        /// Also serve the Controller service for this one node, without Kubernetes.
        #[arg(long)]
        standalone: bool,
    },
    /// The Kubernetes-backed CSI controller (not available yet; use `node --standalone`).
    Controller,
    /// Talk to a running `ferrolvm node` as a CSI client would.
    Csi {
        /// unix:///path/to/csi.sock
        #[arg(long = "csi-endpoint")]
        csi_endpoint: String,
        #[command(subcommand)]
        call: crate::csi::client::CsiCmd,
    },
    /// Check VG metadata consistency; --updatemetadata rewrites every copy.
    Vgck {
        #[arg(long)]
        updatemetadata: bool,
        vgs: Vec<String>,
    },
}

/// A parsed `-L` / `-l` argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Bytes(u64),
    Extents(u64),
    PercentVg(u64),
    PercentFree(u64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sign {
    Abs,
    Plus,
    Minus,
}

fn usage(msg: impl Into<String>) -> EngineError {
    EngineError::Refused(msg.into())
}

/// lvm's size syntax: `[+-]N[.N][unit]`, binary units, default MiB.
pub fn parse_size(s: &str, default_unit: char) -> Result<(Sign, u64)> {
    let (sign, body) = split_sign(s);
    let idx = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, unit) = body.split_at(idx);
    let value: f64 = num
        .parse()
        .map_err(|_| usage(format!("invalid size {s:?}")))?;
    let unit = unit.chars().next().unwrap_or(default_unit);
    if unit.len_utf8() != body.len() - idx && idx != body.len() {
        return Err(usage(format!("invalid size {s:?}")));
    }
    let mult: u64 = match unit.to_ascii_lowercase() {
        'b' => 1,
        's' => 512,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        't' => 1 << 40,
        'p' => 1 << 50,
        'e' => 1 << 60,
        _ => return Err(usage(format!("invalid size unit in {s:?}"))),
    };
    let bytes = value * mult as f64;
    if !(0.0..1.8e19).contains(&bytes) {
        return Err(usage(format!("size {s:?} is out of range")));
    }
    Ok((sign, bytes.ceil() as u64))
}

fn split_sign(s: &str) -> (Sign, &str) {
    if let Some(r) = s.strip_prefix('+') {
        (Sign::Plus, r)
    } else if let Some(r) = s.strip_prefix('-') {
        (Sign::Minus, r)
    } else {
        (Sign::Abs, s)
    }
}

fn parse_amount(size: Option<&str>, extents: Option<&str>) -> Result<(Sign, Amount)> {
    match (size, extents) {
        (Some(s), None) => parse_size(s, 'm').map(|(sg, b)| (sg, Amount::Bytes(b))),
        (None, Some(e)) => {
            let (sign, body) = split_sign(e);
            let (num, pct) = match body.split_once('%') {
                Some((n, p)) => (n, Some(p.to_ascii_uppercase())),
                None => (body, None),
            };
            let n: u64 = num
                .parse()
                .map_err(|_| usage(format!("invalid extents {e:?}")))?;
            let a = match pct.as_deref() {
                None => Amount::Extents(n),
                Some("VG") => Amount::PercentVg(n),
                Some("FREE") => Amount::PercentFree(n),
                Some(p) => return Err(usage(format!("unsupported %{p} in -l"))),
            };
            Ok((sign, a))
        }
        (Some(_), Some(_)) => Err(usage("please specify either -L or -l, not both")),
        (None, None) => Err(usage("please specify a size with -L or -l")),
    }
}

fn to_extents(vg: &Vg, a: Amount) -> u64 {
    let es = vg.extent_size as u64 * 512;
    match a {
        Amount::Bytes(b) => b.div_ceil(es),
        Amount::Extents(n) => n,
        Amount::PercentVg(p) => vg.extent_count() * p / 100,
        Amount::PercentFree(p) => ferrolvm_metadata::alloc::FreeMap::of(vg).total() * p / 100,
    }
}

fn split_lv(arg: &str) -> Result<(String, String)> {
    let a = arg.trim_start_matches("/dev/");
    a.split_once('/')
        .map(|(v, l)| (v.to_string(), l.to_string()))
        .ok_or_else(|| usage(format!("{arg:?}: please give VG/LV")))
}

fn pv_keys(vg: &Vg, scan: &crate::scan::Scan, paths: &[String]) -> Result<Option<Vec<String>>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let found = scan
        .vg(&vg.name)
        .ok_or_else(|| EngineError::VgNotFound(vg.name.clone()))?;
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

fn layout(a: &PvLayoutArgs) -> Result<PvLayout> {
    let metadata_size = a
        .metadatasize
        .as_deref()
        .map(|s| parse_size(s, 'm').map(|(_, b)| b))
        .transpose()?;
    let data_alignment = a
        .dataalignment
        .as_deref()
        .map(|s| parse_size(s, 'k').map(|(_, b)| b))
        .transpose()?
        .unwrap_or(1 << 20);
    Ok(PvLayout {
        metadata_size,
        copies: a.pvmetadatacopies,
        data_alignment,
    })
}

fn print_report(kind: &str, rows: Vec<report::Row>, fields: &[String], r: &ReportArgs) {
    if r.reportformat.as_deref() == Some("json") {
        print!("{}", report::json(kind, &rows));
    } else {
        print!("{}", report::columns(&rows, fields, !r.noheadings));
    }
}

fn units(r: &ReportArgs) -> Units {
    Units {
        unit: r.units.unwrap_or('h'),
        suffix: !r.nosuffix,
    }
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
        id: engine::random_uuid(),
        tags: tags.clone(),
        creation_time: engine::now(),
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
                    tdata_id: engine::random_uuid(),
                    tmeta_id: engine::random_uuid(),
                    spare_id: engine::random_uuid(),
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
    let probe = engine::Session::open(host, &vgname)?;
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

pub fn run(cli: Cli) -> Result<()> {
    let common = cli.common;
    let host = Host::load((!common.devices.is_empty()).then(|| common.devices.clone()));
    match cli.cmd {
        Cmd::Pvcreate {
            layout: l,
            force,
            pvs,
        } => {
            engine::pvcreate(&host, &pvs, layout(&l)?, force > 0)?;
            for p in pvs {
                println!(
                    "  Physical volume \"{}\" successfully created.",
                    p.display()
                );
            }
        }
        Cmd::Vgcreate {
            extent_size,
            tags,
            layout: l,
            force: _,
            vg,
            pvs,
        } => {
            let es = match extent_size {
                Some(s) => parse_size(&s, 'm')?.1 / 512,
                None => 8192,
            };
            let es = u32::try_from(es).map_err(|_| usage("extent size too large"))?;
            engine::vgcreate(&host, &vg, &pvs, es, tags, layout(&l)?)?;
            println!("  Volume group \"{vg}\" successfully created");
        }
        Cmd::Vgextend {
            layout: l,
            force: _,
            vg,
            pvs,
        } => {
            engine::vgextend(&host, &vg, &pvs, layout(&l)?)?;
            println!("  Volume group \"{vg}\" successfully extended");
        }
        Cmd::Vgremove { force, vgs } => {
            for vg in vgs {
                engine::vgremove(&host, &vg, force > 0)?;
                println!("  Volume group \"{vg}\" successfully removed");
            }
        }
        Cmd::Pvs { report: r, names } => {
            let fields = report::fields(r.options.as_deref(), report::PVS_DEFAULT);
            let _g =
                crate::lock::LvmLock::global(&host.lock_dir, Mode::Shared).map_err(|source| {
                    EngineError::Lock {
                        name: "P_global".into(),
                        source,
                    }
                })?;
            let scan = scan_paths(&host.candidate_devices());
            print_report(
                "pv",
                report::pv_rows(&scan, &names, &fields, units(&r)),
                &fields,
                &r,
            );
        }
        Cmd::Vgs { report: r, names } => {
            let fields = report::fields(r.options.as_deref(), report::VGS_DEFAULT);
            let _g =
                crate::lock::LvmLock::global(&host.lock_dir, Mode::Shared).map_err(|source| {
                    EngineError::Lock {
                        name: "P_global".into(),
                        source,
                    }
                })?;
            let scan = scan_paths(&host.candidate_devices());
            for n in &names {
                if scan.vg(n).is_none() {
                    return Err(EngineError::VgNotFound(n.clone()));
                }
            }
            print_report(
                "vg",
                report::vg_rows(&scan, &names, &fields, units(&r)),
                &fields,
                &r,
            );
        }
        Cmd::Lvs {
            report: r,
            all,
            names,
        } => {
            let fields = report::fields(r.options.as_deref(), report::LVS_DEFAULT);
            // Like lvm2: one VG is read under its lock; all VGs under the global lock.
            let vg_names: Vec<String> = names
                .iter()
                .map(|n| {
                    n.trim_start_matches("/dev/")
                        .split('/')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
            let _locks: Vec<_> = if vg_names.is_empty() {
                vec![
                    crate::lock::LvmLock::global(&host.lock_dir, Mode::Shared).map_err(
                        |source| EngineError::Lock {
                            name: "P_global".into(),
                            source,
                        },
                    )?,
                ]
            } else {
                let mut v = vg_names.clone();
                v.sort();
                v.dedup();
                v.iter()
                    .map(|n| engine::lock_vg(&host, n, Mode::Shared))
                    .collect::<Result<_>>()?
            };
            let scan = scan_paths(&host.candidate_devices());
            for n in &vg_names {
                if scan.vg(n).is_none() {
                    return Err(EngineError::VgNotFound(n.clone()));
                }
            }
            let names: Vec<String> = names
                .iter()
                .map(|n| n.trim_start_matches("/dev/").to_string())
                .collect();
            print_report(
                "lv",
                report::lv_rows(&scan, &names, &fields, units(&r), all),
                &fields,
                &r,
            );
        }
        Cmd::Lvcreate {
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
        } => {
            let first = args
                .first()
                .map(|a| a.trim_start_matches("/dev/").to_string())
                .unwrap_or_default();
            let wants_pool =
                segtype.as_deref() == Some("thin-pool") || (thin && virtualsize.is_none());
            let wants_thin = !snapshot
                && !wants_pool
                && (virtualsize.is_some()
                    || thinpool.is_some()
                    || segtype.as_deref() == Some("thin"));
            if snapshot || wants_thin || wants_pool {
                let activate = parse_yn(&activate, "-a")?;
                return thin_create(
                    &host,
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
            volumes::create(&host, &vgname, activate, |vg, scan| {
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
                        id: engine::random_uuid(),
                        tags: tags.clone(),
                        creation_time: engine::now(),
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
        }
        Cmd::Lvremove {
            force: _,
            discard,
            lvs,
        } => {
            for arg in lvs {
                let (vg, lv) = split_lv(&arg)?;
                volumes::remove(&host, &vg, &lv, discard)?;
                println!("  Logical volume \"{lv}\" successfully removed.");
            }
        }
        Cmd::Lvchange {
            activate,
            ignore_skip,
            lvs,
        } => {
            let on = parse_yn(&activate, "-a")?;
            for arg in lvs {
                let (vg, lv) = split_lv(&arg)?;
                // Naming an LV explicitly activates it, as lvm2 does, unless it is marked to be skipped.
                volumes::set_active(&host, &vg, Some(&[lv]), on, ignore_skip)?;
            }
        }
        Cmd::Vgchange {
            activate,
            ignore_skip,
            vgs,
        } => {
            let on = parse_yn(&activate, "-a")?;
            for vg in vgs {
                let done = volumes::set_active(&host, &vg, None, on, ignore_skip)?;
                let n = if on { done.len() } else { 0 };
                println!("  {n} logical volume(s) in volume group \"{vg}\" now active");
            }
        }
        Cmd::Lvextend {
            size,
            extents,
            args,
        } => resize(&host, size, extents, &args, true)?,
        Cmd::Lvresize {
            size,
            extents,
            force: _,
            args,
        } => resize(&host, size, extents, &args, false)?,
        Cmd::Lvrename { args } => {
            let (vg, old, new) = match args.as_slice() {
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
            engine::modify_vg(&host, &vg, |v, _| {
                ops::rename_lv(v, &old, &new)?;
                Ok(format!("Write from ferrolvm lvrename {vg}/{old} {new}."))
            })?;
            println!("  Renamed \"{old}\" to \"{new}\" in volume group \"{vg}\"");
        }
        Cmd::Vgck {
            updatemetadata,
            vgs,
        } => vgck(&host, updatemetadata, &vgs)?,
        Cmd::Node {
            config,
            node_name,
            csi_endpoint,
            standalone,
        } => serve_node(host, &config, node_name, &csi_endpoint, standalone)?,
        Cmd::Controller => {
            return Err(EngineError::Refused(
                "the Kubernetes-backed controller (LogicalVolume resources, CSIStorageCapacity, scheduler extender) is not built yet; \
                 for a single node, run `ferrolvm node --standalone`"
                    .into(),
            ))
        }
        Cmd::Csi { csi_endpoint, call } => {
            crate::csi::client::run(&csi_endpoint, call).map_err(EngineError::Refused)?
        }
    }
    Ok(())
}

fn serve_node(
    host: Host,
    config: &std::path::Path,
    node: String,
    endpoint: &str,
    standalone: bool,
) -> Result<()> {
    use crate::csi::{
        config::NodeConfig, controller::ControllerService, engine::NodeEngine,
        identity::IdentityService, node::NodeService,
    };
    use ferrolvm_csi::v1::{
        controller_server::ControllerServer, identity_server::IdentityServer,
        node_server::NodeServer,
    };
    let cfg = NodeConfig::load(config).map_err(|e| usage(e.to_string()))?;
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .ok_or_else(|| {
            usage(format!(
                "--csi-endpoint must be unix:///path, not {endpoint:?}"
            ))
        })?;
    let path = std::path::PathBuf::from(path);
    let vgs = cfg
        .device_classes
        .iter()
        .map(|d| d.volume_group.clone())
        .collect();
    let probe = IdentityService::node_probe(vgs, host.clone());
    let watched: Vec<String> = cfg
        .device_classes
        .iter()
        .map(|d| d.volume_group.clone())
        .collect();
    let engine = std::sync::Arc::new(NodeEngine::new(host.clone(), cfg));
    // Changes by anyone (lvm2 on the host included) show up within a second.
    let e = engine.clone();
    let _watcher = crate::csi::watch::watch(
        host,
        watched,
        std::time::Duration::from_millis(500),
        move |vg, seqno| {
            for c in e
                .config
                .device_classes
                .iter()
                .filter(|c| c.volume_group == vg)
            {
                match e.capacity(Some(&c.name)) {
                    Ok(bytes) => {
                        tracing::info!(vg, seqno, class = %c.name, capacity = bytes, "volume group changed")
                    }
                    Err(err) => {
                        tracing::warn!(vg, seqno, class = %c.name, %err, "volume group changed; capacity unknown")
                    }
                }
            }
        },
    );
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| EngineError::Refused(format!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        let mut router = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(IdentityService::new(probe, standalone)))
            .add_service(NodeServer::new(NodeService {
                engine: engine.clone(),
                node: node.clone(),
            }));
        if standalone {
            router = router.add_service(ControllerServer::new(ControllerService {
                engine,
                node: node.clone(),
            }));
        }
        tracing::info!(endpoint = %path.display(), node = %node, standalone, "serving CSI");
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down after in-flight calls");
        };
        crate::csi::serve_unix(&path, router, shutdown)
            .await
            .map_err(|e| EngineError::Refused(format!("serving {}: {e}", path.display())))
    })
}

fn resize(
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

fn vgck(host: &Host, update: bool, vgs: &[String]) -> Result<()> {
    let scan = scan_paths(&host.candidate_devices());
    let names: Vec<String> = if vgs.is_empty() {
        scan.assembly
            .vgs
            .iter()
            .map(|v| v.vg.name.clone())
            .collect()
    } else {
        vgs.to_vec()
    };
    let mut bad = false;
    for name in &names {
        let _l = engine::lock_vg(
            host,
            name,
            if update {
                Mode::Exclusive
            } else {
                Mode::Shared
            },
        )?;
        let scan = scan_paths(&host.candidate_devices());
        let found = scan
            .vg(name)
            .ok_or_else(|| EngineError::VgNotFound(name.clone()))?;
        if update {
            drop(_l);
            engine::update_metadata(host, name)?;
            continue;
        }
        for c in &found.copies {
            use ferrolvm_metadata::scan::CopyState::*;
            let what = match &c.state {
                Current => continue,
                Stale { seqno } => {
                    format!("stale metadata seqno {seqno} (current {})", found.vg.seqno)
                }
                Bad(e) => format!("bad metadata: {e}"),
                Mismatch => format!(
                    "metadata seqno {} differs from the other copies",
                    found.vg.seqno
                ),
            };
            eprintln!("  WARNING: {} mda {}: {what}", scan.path_of(c.dev), c.mda);
            bad = true;
        }
        for id in &found.missing_pvs {
            eprintln!("  WARNING: VG {name} is missing PV {id}");
            bad = true;
        }
        if let Err(e) = found.vg.validate() {
            eprintln!("  {e}");
            bad = true;
        }
    }
    if bad {
        return Err(EngineError::Refused(
            "inconsistent metadata found; see `vgck --updatemetadata`".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M", 'm').unwrap(), (Sign::Abs, 8 << 20));
        assert_eq!(parse_size("+1.5g", 'm').unwrap(), (Sign::Plus, 3 << 29));
        assert_eq!(parse_size("100", 'm').unwrap(), (Sign::Abs, 100 << 20));
        assert_eq!(parse_size("64k", 'k').unwrap(), (Sign::Abs, 65536));
        assert_eq!(parse_size("-4m", 'm').unwrap(), (Sign::Minus, 4 << 20));
        assert!(parse_size("8Q", 'm').is_err());
        assert!(parse_size("x", 'm').is_err());
        assert!(parse_size("8MB", 'm').is_err());
    }

    #[test]
    fn extents_args() {
        assert_eq!(
            parse_amount(None, Some("+10")).unwrap(),
            (Sign::Plus, Amount::Extents(10))
        );
        assert_eq!(
            parse_amount(None, Some("50%FREE")).unwrap(),
            (Sign::Abs, Amount::PercentFree(50))
        );
        assert!(parse_amount(Some("1m"), Some("1")).is_err());
    }
}
