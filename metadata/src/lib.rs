//! Sans-I/O reader and writer of the LVM2 on-disk metadata format.
//!
//! Deterministic: the caller supplies bytes read from devices, random bytes
//! for new uuids, and the time; this crate opens no file, reads no clock and
//! spawns nothing. It turns bytes into a typed [`Vg`] and a changed `Vg` into
//! an exact, ordered list of [`commit::Write`]s that the I/O layer performs.
//!
//! Layers, bottom up:
//! - [`crc`], [`uuid`], [`names`]: LVM's checksum, identifiers and name rules.
//! - [`label`], [`mda`]: the PV label sector and the metadata-area header with
//!   its circular text buffer.
//! - [`config`]: the libdm config syntax, as an ordered tree with source spans.
//! - [`model`]: the typed VG, validation, and LVM's exact raw text layout.
//! - [`alloc`]: extent allocation and free-space accounting.
//! - [`scan`]: choosing the authoritative copy among all PVs' metadata areas.
//! - [`commit`]: the write plan for a VG change (text, precommit, commit).

pub mod alloc;
pub mod commit;
pub mod config;
pub mod crc;
mod error;
pub mod label;
pub mod mda;
pub mod model;
pub mod names;
pub mod ops;
pub mod scan;
pub mod uuid;

pub use error::Error;
pub use model::{Area, Lv, Pv, Segment, ThinMessage, ThinSegment, Trailer, Vg};
pub use uuid::Uuid;

/// LVM sectors are always 512 bytes, whatever the device's block size.
pub const SECTOR: usize = 512;
