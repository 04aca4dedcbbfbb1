//! The report commands: `pvs`, `vgs`, `lvs` — lvm2's locks, a scan, rows,
//! then lvm2's JSON or column output.

use super::args::ReportArgs;
use super::report::{self, Units};
use crate::lvm::host::Host;
use crate::lvm::lock::{LvmLock, Mode};
use crate::lvm::scan::{scan_paths, Scan};
use crate::lvm::session;
use crate::lvm::{LvmError, Result};

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

/// lvm2 reads all VGs under the shared global lock.
fn global_shared(host: &Host) -> Result<LvmLock> {
    LvmLock::global(&host.lock_dir, Mode::Shared, host.lock_wait)
        .map_err(session::lock_error(host, "P_global".into()))
}

fn require_vgs(scan: &Scan, names: &[String]) -> Result<()> {
    match names.iter().find(|n| scan.vg(n).is_none()) {
        Some(n) => Err(LvmError::VgNotFound(n.clone())),
        None => Ok(()),
    }
}

pub fn pvs(host: &Host, r: &ReportArgs, names: &[String]) -> Result<()> {
    let fields = report::fields(r.options.as_deref(), report::PVS_DEFAULT);
    let _g = global_shared(host)?;
    let scan = scan_paths(&host.candidate_devices());
    let rows = report::pv_rows(&scan, names, &fields, units(r));
    print_report("pv", rows, &fields, r);
    Ok(())
}

pub fn vgs(host: &Host, r: &ReportArgs, names: &[String]) -> Result<()> {
    let fields = report::fields(r.options.as_deref(), report::VGS_DEFAULT);
    let _g = global_shared(host)?;
    let scan = scan_paths(&host.candidate_devices());
    require_vgs(&scan, names)?;
    let rows = report::vg_rows(&scan, names, &fields, units(r));
    print_report("vg", rows, &fields, r);
    Ok(())
}

pub fn lvs(host: &Host, r: &ReportArgs, all: bool, names: &[String]) -> Result<()> {
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
        vec![global_shared(host)?]
    } else {
        let mut v = vg_names.clone();
        v.sort();
        v.dedup();
        v.iter()
            .map(|n| session::lock_vg(host, n, Mode::Shared))
            .collect::<Result<_>>()?
    };
    let scan = scan_paths(&host.candidate_devices());
    require_vgs(&scan, &vg_names)?;
    let names: Vec<String> = names
        .iter()
        .map(|n| n.trim_start_matches("/dev/").to_string())
        .collect();
    let rows = report::lv_rows(&scan, &names, &fields, units(r), all);
    print_report("lv", rows, &fields, r);
    Ok(())
}
