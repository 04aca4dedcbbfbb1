//! Choosing the authoritative VG metadata among every PV's metadata areas.
//!
//! The I/O layer reads, per device, the label, each mda header and the text
//! slot 0 points at, and hands them here. The newest valid copy (highest
//! seqno) wins, as in LVM; lower copies are reported as stale, damaged ones
//! as bad, and two different texts with one seqno make the VG unwritable.

use std::collections::BTreeMap;

use crate::label::PvLabel;
use crate::mda::MdaHeader;
use crate::{Error, Uuid, Vg};

/// What was read from one metadata area.
#[derive(Debug, Clone)]
pub struct MdaRead {
    /// Absolute offset of the mda header, from the label.
    pub start: u64,
    pub header: Result<MdaHeader, Error>,
    /// Slot-0 text with its checksum verified, if the header points at any.
    pub text: Option<Result<Vec<u8>, Error>>,
}

/// What was read from one device that carries a PV label.
#[derive(Debug, Clone)]
pub struct DeviceRead {
    pub dev: usize,
    pub label: PvLabel,
    pub mdas: Vec<MdaRead>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CopyState {
    Current,
    Stale {
        seqno: u32,
    },
    Bad(String),
    /// Same seqno as the current copy but different text.
    Mismatch,
    /// A copy of a VG on a device whose PV that copy does not list: no PV
    /// of the VG wrote it, so it is ignored, whatever its seqno.
    Foreign {
        vg: String,
        seqno: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub dev: usize,
    pub mda: usize,
    pub state: CopyState,
}

/// A VG assembled from all copies of its metadata.
#[derive(Debug, Clone)]
pub struct FoundVg {
    pub vg: Vg,
    /// The exact committed text, for byte-for-byte comparisons.
    pub text: Vec<u8>,
    pub copies: Vec<Copy>,
    /// PV uuid -> device index, for the VG's PVs that were found.
    pub pv_devs: BTreeMap<Uuid, usize>,
    pub missing_pvs: Vec<Uuid>,
    /// PV uuids found on more than one device, with every such device. A VG
    /// with any is never written: which copy is the PV cannot be known.
    pub duplicate_pvs: Vec<(Uuid, Vec<usize>)>,
}

impl FoundVg {
    pub fn consistent(&self) -> bool {
        self.copies.iter().all(|c| c.state == CopyState::Current)
            && self.missing_pvs.is_empty()
            && self.duplicate_pvs.is_empty()
    }
    pub fn has_mismatch(&self) -> bool {
        self.copies.iter().any(|c| c.state == CopyState::Mismatch)
    }
}

/// Result of assembling all devices.
#[derive(Debug, Clone, Default)]
pub struct Assembly {
    pub vgs: Vec<FoundVg>,
    /// Devices with a PV label that no VG claims.
    pub orphans: Vec<usize>,
    /// Unparseable copies that could not even be attributed to a VG.
    pub unattributed: Vec<Copy>,
    /// Copies on devices that are not PVs of the VG they describe
    /// ([`CopyState::Foreign`]).
    pub foreign: Vec<Copy>,
}

/// Groups copies by VG uuid and picks the newest of each.
pub fn assemble(devs: &[DeviceRead]) -> Assembly {
    // Parse each distinct text once.
    let mut parsed: BTreeMap<Vec<u8>, Result<Vg, Error>> = BTreeMap::new();
    let mut per_copy: Vec<(usize, usize, Result<Vec<u8>, String>)> = Vec::new();
    for d in devs {
        for (i, m) in d.mdas.iter().enumerate() {
            let r = match (&m.header, &m.text) {
                (Err(e), _) => Err(e.to_string()),
                (Ok(_), None) => continue,
                (Ok(_), Some(Err(e))) => Err(e.to_string()),
                (Ok(_), Some(Ok(t))) => {
                    let entry = parsed.entry(t.clone()).or_insert_with(|| Vg::from_text(t));
                    match entry {
                        Ok(_) => Ok(t.clone()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            per_copy.push((d.dev, i, r));
        }
    }
    let mut by_vg: BTreeMap<Uuid, Vec<(usize, usize, Vec<u8>)>> = BTreeMap::new();
    let mut out = Assembly::default();
    let label_of = |dev: usize| devs.iter().find(|d| d.dev == dev).map(|d| d.label.pv_uuid);
    for (dev, mda, r) in per_copy {
        match r {
            Ok(t) => {
                let vg = parsed[&t].as_ref().expect("only parsed texts are Ok");
                // A PV only ever holds metadata that lists it: anything else
                // was put there by someone else (e.g. a tenant on its volume).
                if label_of(dev).is_none_or(|id| vg.pv_by_id(&id).is_none()) {
                    out.foreign.push(Copy {
                        dev,
                        mda,
                        state: CopyState::Foreign {
                            vg: vg.name.clone(),
                            seqno: vg.seqno,
                        },
                    });
                    continue;
                }
                by_vg.entry(vg.id).or_default().push((dev, mda, t));
            }
            Err(e) => out.unattributed.push(Copy {
                dev,
                mda,
                state: CopyState::Bad(e),
            }),
        }
    }
    for (_, copies) in by_vg {
        let best = copies
            .iter()
            .max_by_key(|(_, _, t)| parsed[t].as_ref().map(|v| v.seqno).unwrap_or(0))
            .map(|c| c.2.clone())
            .unwrap_or_default();
        let Ok(vg) = parsed[&best].clone() else {
            continue;
        };
        let mut states = Vec::new();
        for (dev, mda, t) in &copies {
            let seqno = parsed[t].as_ref().map(|v| v.seqno).unwrap_or(0);
            let state = if *t == best {
                CopyState::Current
            } else if seqno == vg.seqno {
                CopyState::Mismatch
            } else {
                CopyState::Stale { seqno }
            };
            states.push(Copy {
                dev: *dev,
                mda: *mda,
                state,
            });
        }
        let mut pv_devs = BTreeMap::new();
        let mut seen: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
        for d in devs {
            if vg.pv_by_id(&d.label.pv_uuid).is_some() {
                pv_devs.entry(d.label.pv_uuid).or_insert(d.dev);
                seen.entry(d.label.pv_uuid).or_default().push(d.dev);
            }
        }
        let duplicate_pvs = seen.into_iter().filter(|(_, d)| d.len() > 1).collect();
        // Bad copies on this VG's own PVs belong to its report.
        for c in &out.unattributed {
            if devs
                .iter()
                .any(|d| d.dev == c.dev && pv_devs.contains_key(&d.label.pv_uuid))
            {
                states.push(c.clone());
            }
        }
        let missing_pvs = vg
            .pvs
            .iter()
            .map(|p| p.id)
            .filter(|id| !pv_devs.contains_key(id))
            .collect();
        out.vgs.push(FoundVg {
            vg,
            text: best,
            copies: states,
            pv_devs,
            missing_pvs,
            duplicate_pvs,
        });
    }
    out.unattributed
        .retain(|c| !out.vgs.iter().any(|v| v.copies.contains(c)));
    for d in devs {
        if !out.vgs.iter().any(|v| {
            v.pv_devs.values().any(|&x| x == d.dev)
                || v.duplicate_pvs.iter().any(|(_, ds)| ds.contains(&d.dev))
        }) {
            out.orphans.push(d.dev);
        }
    }
    out.vgs.sort_by(|a, b| a.vg.name.cmp(&b.vg.name));
    out
}
