//! One error type for the metadata crate; each variant names the failing
//! check, and carries the numbers an operator needs.

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("damaged PV label: {0}")]
    BadLabel(&'static str),
    #[error("damaged metadata area header: {0}")]
    BadMdaHeader(&'static str),
    #[error("{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("invalid uuid {0:?}")]
    BadUuid(String),
    #[error("invalid {kind} name {name:?}: {why}")]
    BadName {
        kind: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("metadata syntax error at line {line}: {what}")]
    Syntax { line: usize, what: &'static str },
    #[error("not VG metadata: {0}")]
    NotVgMetadata(&'static str),
    #[error("{section} is missing required field {key:?}")]
    MissingField {
        section: &'static str,
        key: &'static str,
    },
    #[error("{section} field {key:?}: {why}")]
    BadField {
        section: &'static str,
        key: &'static str,
        why: &'static str,
    },
    #[error("unknown {what} flag {flag:?}")]
    UnknownFlag { what: &'static str, flag: String },
    #[error("inconsistent VG metadata: {0}")]
    Invalid(String),
    #[error("refusing to write VG {vg}: {why}")]
    NotWritable { vg: String, why: String },
    #[error(
        "metadata area full: the new metadata needs {needed} bytes but an area of {mda_size} bytes holds at most {available} per copy; \
         grow the metadata area (pvcreate --metadatasize) or remove LVs"
    )]
    MetadataAreaFull {
        needed: u64,
        available: u64,
        mda_size: u64,
    },
    #[error("insufficient free space: {needed} extents needed, {free} available")]
    NoSpace { needed: u64, free: u64 },
    #[error("{0}")]
    Request(String),
}
