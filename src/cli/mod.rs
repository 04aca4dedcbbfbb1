//! The command line: lvm2's commands (same names, flags and meanings for
//! what ferrolvm implements) and the servers' commands. Parsing is in
//! [`args`]; each command group has its file; [`run`] only dispatches.

pub mod args;
pub mod csi_client;
mod lv;
mod pv_vg;
pub mod report;
mod reporting;
mod serve;

pub use args::{Cli, Cmd};

use crate::lvm::host::Host;
use crate::lvm::{LvmError, Result};

/// A command-line mistake: lvm2 says so and exits with a failure.
fn usage(msg: impl Into<String>) -> LvmError {
    LvmError::Refused(msg.into())
}

pub fn run(cli: Cli) -> Result<()> {
    let common = cli.common;
    let mut host = Host::load((!common.devices.is_empty()).then(|| common.devices.clone()));
    host.driver_loaded = match common.driverloaded.as_deref() {
        None | Some("y" | "yes") => true,
        Some("n" | "no") => false,
        Some(other) => return Err(usage(format!("--driverloaded takes y or n, not {other:?}"))),
    };
    if let (Err(e), false) = (&host.filter, matches!(cli.cmd, Cmd::Csi { .. })) {
        return Err(LvmError::Refused(e.clone()));
    }
    match cli.cmd {
        Cmd::Pvcreate { layout, force, pvs } => pv_vg::pvcreate(&host, &layout, force, &pvs),
        Cmd::Vgcreate {
            extent_size,
            tags,
            layout,
            force: _,
            vg,
            pvs,
        } => pv_vg::vgcreate(&host, &vg, &pvs, extent_size.as_deref(), tags, &layout),
        Cmd::Vgextend {
            layout,
            force: _,
            vg,
            pvs,
        } => pv_vg::vgextend(&host, &vg, &pvs, &layout),
        Cmd::Vgremove { force, vgs } => pv_vg::vgremove(&host, &vgs, force),
        Cmd::Vgck {
            updatemetadata,
            vgs,
        } => pv_vg::vgck(&host, updatemetadata, &vgs),
        Cmd::Pvs { report, names } => reporting::pvs(&host, &report, &names),
        Cmd::Vgs { report, names } => reporting::vgs(&host, &report, &names),
        Cmd::Lvs { report, all, names } => reporting::lvs(&host, &report, all, &names),
        Cmd::Lvcreate(a) => lv::lvcreate(&host, a),
        Cmd::Lvremove {
            force: _,
            discard,
            lvs,
        } => lv::lvremove(&host, &lvs, discard),
        Cmd::Lvchange {
            activate,
            ignore_skip,
            lvs,
        } => lv::lvchange(&host, &activate, ignore_skip, &lvs),
        Cmd::Vgchange {
            activate,
            ignore_skip,
            vgs,
        } => lv::vgchange(&host, &activate, ignore_skip, &vgs),
        Cmd::Lvextend {
            size,
            extents,
            args,
        } => lv::resize(&host, size, extents, &args, true),
        Cmd::Lvresize {
            size,
            extents,
            force: _,
            args,
        } => lv::resize(&host, size, extents, &args, false),
        Cmd::Lvrename { args } => lv::lvrename(&host, &args),
        Cmd::Node(a) => serve::node(host, a),
        Cmd::Lvmd(a) => serve::lvmd(host, a),
        Cmd::RegisterPlugin(a) => serve::register_plugin(a),
        Cmd::Controller(a) => serve::controller(a),
        Cmd::Scheduler(a) => serve::scheduler(a),
        Cmd::Crd => {
            print!("{}", crate::k8s::crd::crd_yaml());
            Ok(())
        }
        Cmd::Csi { csi_endpoint, call } => {
            csi_client::run(&csi_endpoint, call).map_err(LvmError::Refused)
        }
    }
}
