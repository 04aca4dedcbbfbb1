//! The host side of LVM: everything between the sans-I/O
//! `ferrolvm-metadata` crate and a running system — block-device I/O, lvm2's
//! file locks, lvm.conf with its devices file and hints, scanning, the VG
//! session that commits changes, device-mapper activation, and the LV
//! operations that combine commits with activation in crash-safe order.
//!
//! Nothing here knows about CSI, volumes by name, or Kubernetes.

pub mod activate;
pub mod disk;
pub mod error;
pub mod failpoint;
pub mod filter;
pub mod host;
pub mod lock;
pub mod pv_vg;
pub mod scan;
pub mod session;
pub mod size;
pub mod stats;
pub mod volumes;

pub use error::{LvmError, Result};
