//! ferrolvm: LVM2 volume management without the lvm tools.
//!
//! The metadata format lives in the sans-I/O `ferrolvm-metadata` crate; this
//! crate adds what touches the host: device I/O ([`disk`]), lvm2-compatible
//! locks ([`lock`]), lvm.conf and hints ([`host`]), scanning ([`scan`]),
//! VG changes end to end ([`engine`]), reports ([`report`]) and the
//! lvm-compatible command line ([`cli`]).

pub mod activate;
pub mod cli;
pub mod csi;
pub mod disk;
pub mod engine;
pub mod failpoint;
pub mod host;
pub mod lock;
pub mod report;
pub mod scan;
pub mod volumes;
