//! The write plan for a VG change.
//!
//! Order, and why a crash anywhere leaves the old or the new VG:
//! 1. `Text`: the new text goes into free space of every mda's circular
//!    buffer. No header points at it yet, so readers still see the old VG.
//! 2. `Precommit`: each header's slot 1 points at the new text; readers use
//!    slot 0 only, so still the old VG.
//! 3. `Commit`: each header's slot 0 points at the new text. Once one header
//!    is written, the highest seqno is the new VG and readers take it; stale
//!    mdas are rewritten by the next commit.
//! 4. `Label`: PV labels whose PV_EXT_USED flag changes. A PV in a VG
//!    without the flag is still read as a member (LVM rewrites the flag).
//!
//! The I/O layer must make each barrier group (see [`Phase::barrier`])
//! durable before starting the next. Text and precommit share a group: a
//! precommit header may reach the disk before the text it points to, because
//! nothing reads slot 1 after a crash (LVM reads it only inside the command
//! that wrote it, under the VG lock), and the next commit overwrites it.

use crate::crc::lvm_crc;
use crate::label::PvLabel;
use crate::mda::{MdaHeader, RawLocn};
use crate::scan::DeviceRead;
use crate::{Error, SECTOR};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Text,
    Precommit,
    Commit,
    Label,
}

impl Phase {
    /// Phases in the same group need no flush between them; groups are
    /// written in increasing order with a flush after each.
    pub fn barrier(self) -> u8 {
        match self {
            Phase::Text | Phase::Precommit => 0,
            Phase::Commit => 1,
            Phase::Label => 2,
        }
    }
}

/// One write: `data` at byte `offset` of device `dev` (an index chosen by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub dev: usize,
    pub offset: u64,
    pub data: Vec<u8>,
    pub phase: Phase,
}

/// A PV's metadata areas as read under the VG lock.
#[derive(Debug, Clone)]
pub struct PvMdas {
    pub dev: usize,
    pub mdas: Vec<MdaHeader>,
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(SECTOR) * SECTOR, 0);
    v
}

/// Plans writing `text` (NUL included) as the new committed metadata into
/// every non-ignored mda of `pvs`. Fails without writes when any mda is too
/// small, or when no mda would hold the text.
pub fn plan_commit(pvs: &[PvMdas], text: &[u8]) -> Result<Vec<Write>, Error> {
    let len = text.len() as u64;
    let checksum = lvm_crc(text);
    let mut texts = Vec::new();
    let mut pre = Vec::new();
    let mut commit = Vec::new();
    for pv in pvs {
        for h in pv.mdas.iter().filter(|h| !h.ignored()) {
            let p = h.place(len)?;
            let first = p.first as usize;
            texts.push(Write {
                dev: pv.dev,
                offset: h.start + p.offset,
                data: padded(&text[..first]),
                phase: Phase::Text,
            });
            if p.wrapped > 0 {
                texts.push(Write {
                    dev: pv.dev,
                    offset: h.start + SECTOR as u64,
                    data: padded(&text[first..]),
                    phase: Phase::Text,
                });
            }
            let locn = RawLocn {
                offset: p.offset,
                size: len,
                checksum,
                flags: 0,
            };
            let mut hp = h.clone();
            hp.slots[1] = locn;
            pre.push(Write {
                dev: pv.dev,
                offset: h.start,
                data: hp.encode().to_vec(),
                phase: Phase::Precommit,
            });
            let mut hc = h.clone();
            hc.slots[0] = RawLocn {
                flags: h.slots[0].flags,
                ..locn
            };
            hc.slots[1] = RawLocn::default();
            commit.push(Write {
                dev: pv.dev,
                offset: h.start,
                data: hc.encode().to_vec(),
                phase: Phase::Commit,
            });
        }
    }
    if commit.is_empty() {
        return Err(Error::Request(
            "no metadata area is in use on the VG's PVs; refusing to write metadata nowhere".into(),
        ));
    }
    texts.extend(pre);
    texts.extend(commit);
    Ok(texts)
}

/// What a scan would read back once every write of a [`plan_commit`] plan
/// for `text` has landed, computed instead of read: each mda a `Commit`
/// write touched now has that header and `text` as its slot-0 text, and
/// nothing else changed (the caller holds the VG lock, so no other writer
/// touched these mdas). This saves rereading every device after each
/// commit. Labels are not modelled: for a plan that rewrites any, this
/// returns `Ok(false)` having changed nothing, and the caller rereads.
pub fn after_commit(
    reads: &mut [DeviceRead],
    writes: &[Write],
    text: &[u8],
) -> Result<bool, Error> {
    if writes.iter().any(|w| w.phase == Phase::Label) {
        return Ok(false);
    }
    // Check every target first, so that an error leaves `reads` as it was.
    let mut updates = Vec::new();
    for w in writes.iter().filter(|w| w.phase == Phase::Commit) {
        let header = MdaHeader::decode(&w.data, w.offset)?;
        let found = reads.iter().enumerate().find_map(|(r, read)| {
            (read.dev == w.dev)
                .then(|| read.mdas.iter().position(|m| m.start == w.offset))
                .flatten()
                .map(|m| (r, m))
        });
        let (r, m) = found.ok_or_else(|| {
            Error::Request(format!(
                "the commit wrote an mda header at byte {} of device {} that the scan had not read",
                w.offset, w.dev
            ))
        })?;
        if header.slots[0].size != text.len() as u64 || header.slots[0].checksum != lvm_crc(text) {
            return Err(Error::Request(format!(
                "the commit's header at byte {} of device {} does not describe the committed text",
                w.offset, w.dev
            )));
        }
        updates.push((r, m, header));
    }
    for (r, m, header) in updates {
        let mda = &mut reads[r].mdas[m];
        mda.header = Ok(header);
        mda.text = Some(Ok(text.to_vec()));
    }
    Ok(true)
}

/// Label rewrites that set or clear PV_EXT_USED.
pub fn plan_labels(labels: &[(usize, PvLabel)], in_use: bool) -> Result<Vec<Write>, Error> {
    let mut out = Vec::new();
    for (dev, l) in labels {
        let mut l = l.clone();
        l.ext_version = l.ext_version.max(crate::label::PV_EXT_VERSION);
        if in_use {
            l.ext_flags |= crate::label::PV_EXT_USED;
        } else {
            l.ext_flags &= !crate::label::PV_EXT_USED;
        }
        out.push(Write {
            dev: *dev,
            offset: l.sector * SECTOR as u64,
            data: l.encode()?.to_vec(),
            phase: Phase::Label,
        });
    }
    Ok(out)
}

/// Headers that forget the VG (vgremove): both slots cleared, flags kept.
pub fn plan_wipe(pvs: &[PvMdas]) -> Vec<Write> {
    let mut out = Vec::new();
    for pv in pvs {
        for h in &pv.mdas {
            let mut hc = h.clone();
            hc.slots = [
                RawLocn {
                    flags: h.slots[0].flags,
                    ..RawLocn::default()
                },
                RawLocn::default(),
            ];
            out.push(Write {
                dev: pv.dev,
                offset: h.start,
                data: hc.encode().to_vec(),
                phase: Phase::Commit,
            });
        }
    }
    out
}
