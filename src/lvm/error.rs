//! The one error type of the host side of LVM: every failure of a disk,
//! a lock, the metadata or device-mapper, with the context to act on it.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    #[error(transparent)]
    Metadata(#[from] ferrolvm_metadata::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("taking lvm lock {name}: {source}")]
    Lock { name: String, source: io::Error },
    #[error("timed out after {waited:?} waiting for lvm lock {name}: another command holds it; try again")]
    LockTimeout {
        name: String,
        waited: std::time::Duration,
    },
    #[error("volume group \"{0}\" not found")]
    VgNotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "VG {vg} metadata is inconsistent ({why}); repair it with `vgck --updatemetadata {vg}`"
    )]
    Inconsistent { vg: String, why: String },
    #[error(
        "VG {vg}: PV {pv} is found on more than one device ({}); ferrolvm, like lvm2, will not guess which is the PV — remove the copies or filter them out in lvm.conf",
        devices.join(", ")
    )]
    DuplicatePv {
        vg: String,
        pv: String,
        devices: Vec<String>,
    },
    #[error(transparent)]
    Activate(#[from] crate::lvm::activate::ActivateError),
    #[error("{cause}; undoing it also failed: {rollback}")]
    Rollback {
        cause: Box<LvmError>,
        rollback: Box<LvmError>,
    },
}

impl LvmError {
    /// lvm2's exit codes: 5 for a failed command, 3 for invalid arguments.
    pub fn exit_code(&self) -> i32 {
        5
    }
}

pub type Result<T> = std::result::Result<T, LvmError>;
