//! The PV and VG commands: `pvcreate`, `vgcreate`, `vgextend`, `vgremove`,
//! `vgck`.

use std::path::PathBuf;

use super::args::PvLayoutArgs;
use super::usage;
use crate::lvm::host::Host;
use crate::lvm::lock::Mode;
use crate::lvm::pv_vg::{self, PvLayout};
use crate::lvm::scan::scan_paths;
use crate::lvm::session;
use crate::lvm::size::parse_size;
use crate::lvm::{LvmError, Result};

pub fn layout(a: &PvLayoutArgs) -> Result<PvLayout> {
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

pub fn vgck(host: &Host, update: bool, vgs: &[String]) -> Result<()> {
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
        let _l = session::lock_vg(
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
            .ok_or_else(|| LvmError::VgNotFound(name.clone()))?;
        if update {
            drop(_l);
            pv_vg::update_metadata(host, name)?;
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
                Foreign { vg, seqno } => {
                    format!("a copy of VG {vg} (seqno {seqno}) on a device that is not its PV")
                }
            };
            eprintln!("  WARNING: {} mda {}: {what}", scan.path_of(c.dev), c.mda);
            bad = true;
        }
        for id in &found.missing_pvs {
            eprintln!("  WARNING: VG {name} is missing PV {id}");
            bad = true;
        }
        for c in &scan.assembly.foreign {
            if let ferrolvm_metadata::scan::CopyState::Foreign { vg, seqno } = &c.state {
                if vg == name {
                    eprintln!(
                        "  WARNING: {} mda {}: a copy of VG {vg} (seqno {seqno}) on a device that is not its PV; ignored",
                        scan.path_of(c.dev),
                        c.mda
                    );
                    bad = true;
                }
            }
        }
        for (id, devs) in &found.duplicate_pvs {
            let paths: Vec<String> = devs.iter().map(|&d| scan.path_of(d)).collect();
            eprintln!(
                "  WARNING: VG {name}: PV {id} is on more than one device: {}",
                paths.join(", ")
            );
            bad = true;
        }
        if let Err(e) = found.vg.validate() {
            eprintln!("  {e}");
            bad = true;
        }
    }
    if bad {
        return Err(LvmError::Refused(
            "inconsistent metadata found; see `vgck --updatemetadata`".into(),
        ));
    }
    Ok(())
}

pub fn pvcreate(host: &Host, l: &PvLayoutArgs, force: u8, pvs: &[PathBuf]) -> Result<()> {
    pv_vg::pvcreate(host, pvs, layout(l)?, force > 0)?;
    for p in pvs {
        println!(
            "  Physical volume \"{}\" successfully created.",
            p.display()
        );
    }
    Ok(())
}

pub fn vgcreate(
    host: &Host,
    vg: &str,
    pvs: &[PathBuf],
    extent_size: Option<&str>,
    tags: Vec<String>,
    l: &PvLayoutArgs,
) -> Result<()> {
    let es = match extent_size {
        Some(s) => parse_size(s, 'm')?.1 / 512,
        None => 8192,
    };
    let es = u32::try_from(es).map_err(|_| usage("extent size too large"))?;
    pv_vg::vgcreate(host, vg, pvs, es, tags, layout(l)?)?;
    println!("  Volume group \"{vg}\" successfully created");
    Ok(())
}

pub fn vgextend(host: &Host, vg: &str, pvs: &[PathBuf], l: &PvLayoutArgs) -> Result<()> {
    pv_vg::vgextend(host, vg, pvs, layout(l)?)?;
    println!("  Volume group \"{vg}\" successfully extended");
    Ok(())
}

pub fn vgremove(host: &Host, vgs: &[String], force: u8) -> Result<()> {
    for vg in vgs {
        pv_vg::vgremove(host, vg, force > 0)?;
        println!("  Volume group \"{vg}\" successfully removed");
    }
    Ok(())
}
