//! The node engine — TopoLVM's lvmd, in-process: volumes by CSI name on
//! this node's device classes, group commit, capacity rules, the change
//! watcher, and filesystems and mounts. It speaks no gRPC: the `csi`
//! services call it.

pub mod config;
pub mod engine;
pub mod mounts;
pub mod target;
pub mod volume;
pub mod watch;

pub use engine::NodeEngine;
pub use volume::{Snapshot, Source, Volume, VolumeError};
