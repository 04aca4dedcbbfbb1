//! A volume as the CSI layer sees it, and how it is kept in LVM: the CSI
//! name lives hex-encoded in an LV tag (CSI names may hold characters that
//! tags may not), the LV is named after it when LVM allows, and the volume
//! id is the LV's uuid.

use ferrolvm_metadata::{Lv, Vg};

use crate::lvm::LvmError;

/// Tag prefix holding the hex-encoded CSI name (CSI names may hold characters tags may not).
pub const NAME_TAG: &str = "ferrolvm.io/name=";
/// Tag prefix of snapshots: the hex-encoded CSI snapshot name.
pub const SNAPSHOT_TAG: &str = "ferrolvm.io/snapshot=";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("unknown device class {0:?}")]
    UnknownClass(String),
    #[error(
        "volume {name:?} exists with {existing} bytes, which does not fit the requested range"
    )]
    Conflict { name: String, existing: u64 },
    #[error(
        "not enough space in device class {class}: {needed} bytes requested, {available} available"
    )]
    NoSpace {
        class: String,
        needed: u64,
        available: u64,
    },
    #[error("volume {0} not found")]
    NotFound(String),
    #[error("{0}")]
    NotThin(String),
    /// A path given for a published volume is not there.
    #[error("{0} does not exist")]
    PathMissing(String),
    /// A filesystem or mount step on the host failed (mkfs, mount, grow).
    #[error("{0}")]
    Filesystem(String),
    /// The volume's device is open (mounted, or held by a process).
    #[error("{0}")]
    InUse(String),
    /// No room for the change: free extents, or the metadata area.
    #[error("{0}")]
    Exhausted(String),
    /// An lvm2 lock stayed held past the node's wait: try again.
    #[error("{0}")]
    Busy(String),
    /// What was asked cannot be done as asked (e.g. a size past the limits).
    #[error("{0}")]
    Invalid(String),
    /// The smallest volume that fits is over the caller's limit.
    #[error("{0}")]
    OutOfRange(String),
    /// A publish target holds something ferrolvm did not put there.
    #[error("{0}")]
    TargetOccupied(String),
    /// Anything else from the host side of LVM: unexpected.
    #[error(transparent)]
    Engine(LvmError),
}

impl From<LvmError> for VolumeError {
    /// Tells apart the failures a caller can act on.
    fn from(e: LvmError) -> Self {
        use crate::lvm::activate::ActivateError;
        use ferrolvm_metadata::Error as Md;
        match &e {
            LvmError::Activate(ActivateError::Busy(..)) => VolumeError::InUse(e.to_string()),
            LvmError::Metadata(Md::MetadataAreaFull { .. } | Md::NoSpace { .. }) => {
                VolumeError::Exhausted(e.to_string())
            }
            LvmError::LockTimeout { .. } => VolumeError::Busy(e.to_string()),
            LvmError::Metadata(Md::BadName { .. }) => VolumeError::Invalid(e.to_string()),
            _ => VolumeError::Engine(e),
        }
    }
}

/// The error for a rounded size over a limit (`limit` 0: none), or None.
pub(crate) fn over_limit(name: &str, bytes: u64, limit: u64) -> Option<VolumeError> {
    (limit > 0 && bytes > limit).then(|| {
        VolumeError::OutOfRange(format!(
            "volume {name:?}: the smallest size that fits is {bytes} bytes, over the limit of {limit}"
        ))
    })
}

impl VolumeError {
    /// The same failure, for another request of the same batch: every
    /// classified kind is kept; an unexpected one keeps its message.
    pub fn share(&self) -> VolumeError {
        match self {
            VolumeError::UnknownClass(c) => VolumeError::UnknownClass(c.clone()),
            VolumeError::Conflict { name, existing } => VolumeError::Conflict {
                name: name.clone(),
                existing: *existing,
            },
            VolumeError::NoSpace {
                class,
                needed,
                available,
            } => VolumeError::NoSpace {
                class: class.clone(),
                needed: *needed,
                available: *available,
            },
            VolumeError::NotFound(x) => VolumeError::NotFound(x.clone()),
            VolumeError::NotThin(x) => VolumeError::NotThin(x.clone()),
            VolumeError::PathMissing(x) => VolumeError::PathMissing(x.clone()),
            VolumeError::Filesystem(x) => VolumeError::Filesystem(x.clone()),
            VolumeError::InUse(x) => VolumeError::InUse(x.clone()),
            VolumeError::Exhausted(x) => VolumeError::Exhausted(x.clone()),
            VolumeError::Busy(x) => VolumeError::Busy(x.clone()),
            VolumeError::Invalid(x) => VolumeError::Invalid(x.clone()),
            VolumeError::TargetOccupied(x) => VolumeError::TargetOccupied(x.clone()),
            VolumeError::OutOfRange(x) => VolumeError::OutOfRange(x.clone()),
            VolumeError::Engine(e) => VolumeError::Engine(LvmError::Refused(e.to_string())),
        }
    }
}

/// A volume as the CSI layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `<lv uuid>` — stable across renames and restarts.
    pub id: String,
    pub name: String,
    pub class: String,
    pub vg: String,
    pub lv: String,
    pub bytes: u64,
}

pub(crate) fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The LV name for a CSI name: the name itself when LVM allows it, else a
/// stable hash of it.
pub fn lv_name_for(name: &str) -> String {
    if name.len() <= 64 && ferrolvm_metadata::names::check_lv_name(name).is_ok() {
        return name.to_string();
    }
    format!("csi-{:016x}", stable_hash(name))
}

/// FNV-1a of a name: stable across builds and machines, for names derived
/// from CSI names (LV names here, LogicalVolume object names in `k8s/`).
pub fn stable_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub(crate) fn csi_name(lv: &Lv) -> Option<String> {
    lv.tags
        .iter()
        .find_map(|t| t.strip_prefix(NAME_TAG))
        .and_then(unhex)
}

pub(crate) fn snapshot_name(lv: &Lv) -> Option<String> {
    lv.tags
        .iter()
        .find_map(|t| t.strip_prefix(SNAPSHOT_TAG))
        .and_then(unhex)
}

/// A snapshot as the CSI layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    /// Volume id of the origin.
    pub source: String,
    pub bytes: u64,
    pub created: u64,
}

/// Where a new volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

pub(crate) fn to_volume(vg: &Vg, lv: &Lv, class: &str) -> Option<Volume> {
    Some(Volume {
        id: lv.id.dashed(),
        name: csi_name(lv)?,
        class: class.to_string(),
        vg: vg.name.clone(),
        lv: lv.name.clone(),
        bytes: lv.extent_count() as u64 * vg.extent_size as u64 * 512,
    })
}

pub(crate) fn unique_name(vg: &Vg, name: &str) -> String {
    let base = lv_name_for(name);
    if vg.lv(&base).is_none() {
        return base;
    }
    (1..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| vg.lv(n).is_none())
        .expect("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(lv_name_for("pvc-0f1e2d"), "pvc-0f1e2d");
        let odd = lv_name_for("sanity-Node Service NodePublish 1234");
        assert!(odd.starts_with("csi-") && odd.len() == 20);
        assert_eq!(
            lv_name_for("snapshot-x"),
            lv_name_for("snapshot-x"),
            "stable"
        );
        assert!(
            lv_name_for("snapshot-x").starts_with("csi-"),
            "reserved LV names are hashed"
        );
        let name = "sanity name with spaces/ and ünïcode";
        let tag = format!("{NAME_TAG}{}", hex(name));
        ferrolvm_metadata::names::check_tag(&tag).unwrap();
        assert_eq!(unhex(&hex(name)).as_deref(), Some(name));
    }

    #[test]
    fn lvm_failures_are_classified() {
        use crate::lvm::activate::ActivateError;
        let full = LvmError::Metadata(ferrolvm_metadata::Error::MetadataAreaFull {
            needed: 2,
            available: 1,
            mda_size: 1,
        });
        assert!(matches!(VolumeError::from(full), VolumeError::Exhausted(_)));
        let busy = LvmError::Activate(ActivateError::Busy("vg/lv".into(), 2));
        assert!(
            matches!(VolumeError::from(busy), VolumeError::InUse(m) if m.contains("open 2 times"))
        );
        let lock = LvmError::LockTimeout {
            name: "V_vg".into(),
            waited: std::time::Duration::from_secs(1),
        };
        let busy = VolumeError::from(lock);
        assert!(matches!(&busy, VolumeError::Busy(_)));
        assert!(
            matches!(busy.share(), VolumeError::Busy(_)),
            "a batch keeps the kind"
        );
        let io = LvmError::Io {
            path: "/dev/x".into(),
            source: std::io::Error::other("gone"),
        };
        let e = VolumeError::from(io);
        assert!(matches!(&e, VolumeError::Engine(_)));
        assert_eq!(e.share().to_string(), e.to_string());
    }
}
