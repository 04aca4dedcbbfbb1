//! The metadata area: its header sector and the circular text buffer behind it.

use crate::crc::{lvm_crc, LvmCrc};
use crate::label::{u32le, u64le};
use crate::{Error, SECTOR};

pub const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
pub const MDA_VERSION: u32 = 1;
/// raw_locn flag: this mda holds no text and is not written ("ignored").
pub const RAW_LOCN_IGNORED: u32 = 0x1;
/// Text copies start on 512-byte boundaries relative to the mda start.
const ALIGN: u64 = 512;

/// A `{offset, size, checksum, flags}` slot; offset is relative to the mda start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawLocn {
    pub offset: u64,
    /// Text length including the terminating NUL.
    pub size: u64,
    pub checksum: u32,
    pub flags: u32,
}

impl RawLocn {
    pub fn ignored(&self) -> bool {
        self.flags & RAW_LOCN_IGNORED != 0
    }
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }
}

/// A decoded mda header. `slots[0]` is the committed copy, `slots[1]` the
/// precommitted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdaHeader {
    /// Absolute byte offset of the header on its device.
    pub start: u64,
    /// Size of the whole area, header included.
    pub size: u64,
    pub slots: [RawLocn; 2],
}

/// Where a new text copy goes: `first` bytes at `offset`, then `wrapped`
/// bytes at offset 512 (both relative to the mda start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub offset: u64,
    pub first: u64,
    pub wrapped: u64,
}

impl MdaHeader {
    /// A fresh header with empty slots (what pvcreate writes).
    pub fn empty(start: u64, size: u64, ignored: bool) -> Self {
        let flags = if ignored { RAW_LOCN_IGNORED } else { 0 };
        MdaHeader {
            start,
            size,
            slots: [
                RawLocn {
                    flags,
                    ..RawLocn::default()
                },
                RawLocn::default(),
            ],
        }
    }

    pub fn ignored(&self) -> bool {
        self.slots[0].ignored()
    }

    /// Largest text (NUL included) that fits: two copies must always fit.
    pub fn max_text_len(&self) -> u64 {
        ((self.size.saturating_sub(ALIGN)) / 2).saturating_sub(ALIGN)
    }

    pub fn decode(sector: &[u8], expected_start: u64) -> Result<Self, Error> {
        if sector.len() != SECTOR {
            return Err(Error::BadMdaHeader("header is not 512 bytes"));
        }
        let stored = u32le(sector, 0);
        let computed = lvm_crc(&sector[4..]);
        if stored != computed {
            return Err(Error::BadChecksum {
                what: "mda header",
                stored,
                computed,
            });
        }
        if &sector[4..20] != MDA_MAGIC {
            return Err(Error::BadMdaHeader("wrong magic"));
        }
        if u32le(sector, 20) != MDA_VERSION {
            return Err(Error::BadMdaHeader("unsupported version"));
        }
        let start = u64le(sector, 24);
        let size = u64le(sector, 32);
        if start != expected_start {
            return Err(Error::BadMdaHeader(
                "start does not match the label's mda offset",
            ));
        }
        if size < 2 * ALIGN {
            return Err(Error::BadMdaHeader("area too small"));
        }
        let slot = |at: usize| RawLocn {
            offset: u64le(sector, at),
            size: u64le(sector, at + 8),
            checksum: u32le(sector, at + 16),
            flags: u32le(sector, at + 20),
        };
        let h = MdaHeader {
            start,
            size,
            slots: [slot(40), slot(64)],
        };
        for s in &h.slots {
            if s.is_empty() {
                continue;
            }
            if s.offset < ALIGN
                || s.offset >= size
                || s.size > size - ALIGN
                || s.size > u32::MAX as u64
            {
                return Err(Error::BadMdaHeader("slot points outside the area"));
            }
        }
        Ok(h)
    }

    pub fn encode(&self) -> [u8; SECTOR] {
        let mut s = [0u8; SECTOR];
        s[4..20].copy_from_slice(MDA_MAGIC);
        s[20..24].copy_from_slice(&MDA_VERSION.to_le_bytes());
        s[24..32].copy_from_slice(&self.start.to_le_bytes());
        s[32..40].copy_from_slice(&self.size.to_le_bytes());
        for (i, slot) in self.slots.iter().enumerate() {
            let at = 40 + 24 * i;
            s[at..at + 8].copy_from_slice(&slot.offset.to_le_bytes());
            s[at + 8..at + 16].copy_from_slice(&slot.size.to_le_bytes());
            s[at + 16..at + 20].copy_from_slice(&slot.checksum.to_le_bytes());
            s[at + 20..at + 24].copy_from_slice(&slot.flags.to_le_bytes());
        }
        let crc = lvm_crc(&s[4..]);
        s[0..4].copy_from_slice(&crc.to_le_bytes());
        s
    }

    /// The byte ranges (absolute on the device) holding the text of `slot`.
    pub fn text_ranges(&self, slot: &RawLocn) -> [(u64, u64); 2] {
        let first = slot.size.min(self.size - slot.offset);
        let wrapped = slot.size - first;
        [
            (self.start + slot.offset, first),
            (self.start + ALIGN, wrapped),
        ]
    }

    /// Checks `text` (read from `text_ranges`) against the slot's checksum.
    pub fn verify_text(slot: &RawLocn, parts: &[&[u8]]) -> Result<(), Error> {
        let mut c = LvmCrc::new();
        for p in parts {
            c.update(p);
        }
        let computed = c.finish();
        if computed != slot.checksum {
            return Err(Error::BadChecksum {
                what: "metadata text",
                stored: slot.checksum,
                computed,
            });
        }
        Ok(())
    }

    /// Where the next copy of `len` bytes goes after the committed copy,
    /// following LVM's rules; errors when it cannot fit.
    pub fn place(&self, len: u64) -> Result<Placement, Error> {
        let max = self.max_text_len();
        if len > max {
            return Err(Error::MetadataAreaFull {
                needed: len,
                available: max,
                mda_size: self.size,
            });
        }
        let old = self.slots[0];
        let offset = if old.is_empty() || old.ignored() || old.size == 0 {
            ALIGN
        } else {
            let old_last = if old.offset + old.size > self.size {
                (old.offset + old.size - self.size) + ALIGN - 1
            } else {
                old.offset + old.size - 1
            };
            if self.size - old_last < ALIGN {
                ALIGN
            } else {
                let n = (old_last + 1).div_ceil(ALIGN) * ALIGN;
                if n > self.size - ALIGN {
                    ALIGN
                } else {
                    n
                }
            }
        };
        let first = len.min(self.size - offset);
        let p = Placement {
            offset,
            first,
            wrapped: len - first,
        };
        if self.overlaps_committed(&p) {
            // Cannot happen with len <= max_text_len; kept as a guard because
            // overwriting the committed copy would lose the VG on a crash.
            return Err(Error::MetadataAreaFull {
                needed: len,
                available: max,
                mda_size: self.size,
            });
        }
        Ok(p)
    }

    fn overlaps_committed(&self, p: &Placement) -> bool {
        let old = self.slots[0];
        if old.is_empty() || old.ignored() {
            return false;
        }
        let ranges =
            |off: u64, first: u64, wrapped: u64| [(off, off + first), (ALIGN, ALIGN + wrapped)];
        let old_first = old.size.min(self.size - old.offset);
        let a = ranges(p.offset, p.first, p.wrapped);
        let b = ranges(old.offset, old_first, old.size - old_first);
        a.iter()
            .any(|&(s1, e1)| e1 > s1 && b.iter().any(|&(s2, e2)| e2 > s2 && s1 < e2 && s2 < e1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let mut h = MdaHeader::empty(4096, 1044480, false);
        h.slots[0] = RawLocn {
            offset: 5632,
            size: 1836,
            checksum: 0xc5892ed3,
            flags: 0,
        };
        let s = h.encode();
        assert_eq!(MdaHeader::decode(&s, 4096).unwrap(), h);
        assert!(MdaHeader::decode(&s, 8192).is_err());
        let mut c = s;
        c[50] ^= 1;
        assert!(matches!(
            MdaHeader::decode(&c, 4096),
            Err(Error::BadChecksum { .. })
        ));
    }

    /// The sequence observed on a 32 KiB mda in the spec (2.2): a copy placed
    /// at 30720 followed by one of 1287 bytes at 32256 that wraps 775 bytes.
    #[test]
    fn placement_wraps_like_lvm() {
        let size = 32768;
        let mut h = MdaHeader::empty(4096, size, false);
        h.slots[0] = RawLocn {
            offset: 30720,
            size: 1287,
            checksum: 0,
            flags: 0,
        };
        let p = h.place(1287).unwrap();
        assert_eq!(
            p,
            Placement {
                offset: 32256,
                first: 512,
                wrapped: 775
            }
        );
        h.slots[0] = RawLocn {
            offset: p.offset,
            size: 1287,
            checksum: 0,
            flags: 0,
        };
        let p = h.place(1287).unwrap();
        assert_eq!(p.offset, 1536);
        assert_eq!(p.wrapped, 0);
    }

    #[test]
    fn empty_and_full() {
        let h = MdaHeader::empty(4096, 32768, false);
        assert_eq!(h.place(100).unwrap().offset, 512);
        assert_eq!(h.max_text_len(), (32768 - 512) / 2 - 512);
        assert!(matches!(
            h.place(h.max_text_len() + 1),
            Err(Error::MetadataAreaFull { .. })
        ));
    }

    /// The byte intervals a text of `len` bytes at `offset` occupies in a
    /// circular area of `size` bytes whose text region starts after the
    /// 512-byte header: to the end of the area, then the rest from 512.
    /// Written from the format's description, not from `MdaHeader`'s own
    /// helpers, so it can catch them.
    fn oracle_intervals(offset: u64, len: u64, size: u64) -> Vec<(u64, u64)> {
        let to_end = size - offset;
        if len <= to_end {
            vec![(offset, offset + len)]
        } else {
            vec![(offset, size), (512, 512 + (len - to_end))]
        }
    }

    fn oracle_disjoint(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
        a.iter()
            .all(|&(s1, e1)| b.iter().all(|&(s2, e2)| e1 <= s2 || e2 <= s1))
    }

    proptest::proptest! {
        /// Any sequence of copies that LVM accepts never overlaps the
        /// committed copy, stays inside the text region, and starts aligned.
        #[test]
        fn placement_invariants(size_kib in 32u64..256, lens in proptest::collection::vec(1u64..20000, 1..60)) {
            let size = size_kib * 1024;
            let mut h = MdaHeader::empty(4096, size, false);
            let mut committed: Option<(u64, u64)> = None;
            for len in lens {
                let len = len.min(h.max_text_len());
                let p = h.place(len).unwrap();
                proptest::prop_assert!(p.offset >= 512 && p.offset.is_multiple_of(512) && p.offset < size);
                proptest::prop_assert_eq!(p.first + p.wrapped, len);
                let new = oracle_intervals(p.offset, len, size);
                proptest::prop_assert_eq!(&new, &oracle_intervals(p.offset, p.first + p.wrapped, size));
                proptest::prop_assert!(new.iter().all(|&(s, e)| 512 <= s && s <= e && e <= size));
                if let Some((off, l)) = committed {
                    let old = oracle_intervals(off, l, size);
                    proptest::prop_assert!(oracle_disjoint(&new, &old), "{:?} overlaps the committed {:?}", new, old);
                }
                h.slots[0] = RawLocn { offset: p.offset, size: len, checksum: 0, flags: 0 };
                committed = Some((p.offset, len));
            }
        }
    }
}
