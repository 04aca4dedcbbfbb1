//! ferrolvm: capacity-aware node-local LVM volumes for Kubernetes, without
//! the lvm tools.
//!
//! One folder per job, dependencies in one direction only
//! (`metadata ← lvm ← node ← csi ← cli`; see ARCHITECTURE.md):
//! - [`lvm`]: the host side of LVM — disks, lvm2's locks and configuration,
//!   scanning, VG sessions, device-mapper activation, LV operations;
//! - [`node`]: the node engine (TopoLVM's lvmd, in-process) — volumes by
//!   CSI name, group commit, capacity, filesystems and mounts;
//! - [`csi`]: the gRPC services, and the one place errors become gRPC codes;
//! - [`cli`]: the lvm-compatible commands and reports, and the servers'
//!   command lines.

pub mod cli;
pub mod csi;
pub mod k8s;
pub mod lvm;
pub mod metrics;
pub mod node;
