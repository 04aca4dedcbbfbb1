//! The PV label: label_header + pv_header + pv_header_extension, one
//! 512-byte sector within the first four sectors of a device.

use crate::crc::lvm_crc;
use crate::{Error, Uuid, SECTOR};

pub const LABEL_ID: &[u8; 8] = b"LABELONE";
pub const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// Bytes scanned for a label: sectors 0..3.
pub const LABEL_SCAN_SIZE: usize = 2048;
/// Sector LVM writes its label to.
pub const DEFAULT_LABEL_SECTOR: u64 = 1;
/// pv_header_extension flag: the PV belongs to a VG.
pub const PV_EXT_USED: u32 = 0x1;
/// Extension version LVM 2.03 writes.
pub const PV_EXT_VERSION: u32 = 2;

const PV_HEADER_OFFSET: usize = 32;

/// An `{offset, size}` pair in bytes, as in the pv_header lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLocn {
    pub offset: u64,
    pub size: u64,
}

/// A decoded PV label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// Sector (0..3) the label sits in.
    pub sector: u64,
    pub pv_uuid: Uuid,
    /// Device size in bytes when the label was written.
    pub device_size: u64,
    pub data_areas: Vec<DiskLocn>,
    pub metadata_areas: Vec<DiskLocn>,
    /// 0 means "no extension".
    pub ext_version: u32,
    pub ext_flags: u32,
    pub bootloader_areas: Vec<DiskLocn>,
}

impl PvLabel {
    /// The data area start (pe_start) in bytes, if the label has one.
    pub fn pe_start(&self) -> Option<u64> {
        self.data_areas.first().map(|d| d.offset)
    }

    pub fn in_use(&self) -> bool {
        self.ext_version >= 2 && self.ext_flags & PV_EXT_USED != 0
    }

    /// Finds the label in the first 2048 bytes of a device. `Ok(None)` means
    /// the device carries no LVM label at all; an error means a label-looking
    /// sector that is damaged.
    pub fn find(scan: &[u8]) -> Result<Option<PvLabel>, Error> {
        let mut damaged = None;
        for s in 0..4u64 {
            let start = (s as usize) * SECTOR;
            let Some(sector) = scan.get(start..start + SECTOR) else {
                break;
            };
            if &sector[0..8] != LABEL_ID {
                continue;
            }
            match Self::decode(sector, s) {
                Ok(l) => return Ok(Some(l)),
                Err(e) => damaged = damaged.or(Some(e)),
            }
        }
        match damaged {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Decodes one label sector that claims to be sector `index`.
    pub fn decode(sector: &[u8], index: u64) -> Result<PvLabel, Error> {
        let bad = |why: &'static str| Error::BadLabel(why);
        if sector.len() != SECTOR {
            return Err(bad("label sector is not 512 bytes"));
        }
        if &sector[0..8] != LABEL_ID {
            return Err(bad("no LABELONE signature"));
        }
        if u64le(sector, 8) != index {
            return Err(bad(
                "sector_xl does not match the sector the label was found in",
            ));
        }
        let crc = u32le(sector, 16);
        if crc != lvm_crc(&sector[20..]) {
            return Err(Error::BadChecksum {
                what: "label",
                stored: crc,
                computed: lvm_crc(&sector[20..]),
            });
        }
        let offset = u32le(sector, 20) as usize;
        if offset != PV_HEADER_OFFSET && !(32..=SECTOR - 40).contains(&offset) {
            return Err(bad("pv_header offset out of range"));
        }
        if &sector[24..32] != LABEL_TYPE {
            return Err(bad("label type is not LVM2 001"));
        }
        let pv_uuid = Uuid::from_raw(&sector[offset..offset + 32])?;
        let device_size = u64le(sector, offset + 32);
        let mut pos = offset + 40;
        let data_areas = read_list(sector, &mut pos)?;
        let metadata_areas = read_list(sector, &mut pos)?;
        if metadata_areas.len() > 2 {
            return Err(bad("more than two metadata areas"));
        }
        let (mut ext_version, mut ext_flags, mut bootloader_areas) = (0, 0, Vec::new());
        if pos + 8 <= SECTOR {
            ext_version = u32le(sector, pos);
            // Version 0 means "no extension": its flag word means nothing.
            ext_flags = if ext_version == 0 {
                0
            } else {
                u32le(sector, pos + 4)
            };
            pos += 8;
            if ext_version >= 1 {
                bootloader_areas = read_list(sector, &mut pos)?;
            }
        }
        Ok(PvLabel {
            sector: index,
            pv_uuid,
            device_size,
            data_areas,
            metadata_areas,
            ext_version,
            ext_flags,
            bootloader_areas,
        })
    }

    /// Encodes the label sector (512 bytes) with its CRC.
    pub fn encode(&self) -> Result<[u8; SECTOR], Error> {
        let mut s = [0u8; SECTOR];
        s[0..8].copy_from_slice(LABEL_ID);
        s[8..16].copy_from_slice(&self.sector.to_le_bytes());
        s[20..24].copy_from_slice(&(PV_HEADER_OFFSET as u32).to_le_bytes());
        s[24..32].copy_from_slice(LABEL_TYPE);
        s[32..64].copy_from_slice(self.pv_uuid.raw());
        s[64..72].copy_from_slice(&self.device_size.to_le_bytes());
        let mut pos = 72;
        for list in [&self.data_areas, &self.metadata_areas] {
            write_list(&mut s, &mut pos, list)?;
        }
        if self.ext_version > 0 {
            put(&mut s, &mut pos, &self.ext_version.to_le_bytes())?;
            put(&mut s, &mut pos, &self.ext_flags.to_le_bytes())?;
            write_list(&mut s, &mut pos, &self.bootloader_areas)?;
        }
        let crc = lvm_crc(&s[20..]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        Ok(s)
    }
}

fn put(s: &mut [u8; SECTOR], pos: &mut usize, bytes: &[u8]) -> Result<(), Error> {
    let end = *pos + bytes.len();
    if end > SECTOR {
        return Err(Error::BadLabel("area lists do not fit in the label sector"));
    }
    s[*pos..end].copy_from_slice(bytes);
    *pos = end;
    Ok(())
}

fn write_list(s: &mut [u8; SECTOR], pos: &mut usize, list: &[DiskLocn]) -> Result<(), Error> {
    for d in list {
        if d.offset == 0 {
            return Err(Error::BadLabel("an area at offset 0 cannot be represented"));
        }
        put(s, pos, &d.offset.to_le_bytes())?;
        put(s, pos, &d.size.to_le_bytes())?;
    }
    put(s, pos, &[0u8; 16])
}

fn read_list(sector: &[u8], pos: &mut usize) -> Result<Vec<DiskLocn>, Error> {
    let mut out = Vec::new();
    loop {
        if *pos + 16 > SECTOR {
            return Err(Error::BadLabel("area list runs past the label sector"));
        }
        let offset = u64le(sector, *pos);
        let size = u64le(sector, *pos + 8);
        *pos += 16;
        if offset == 0 {
            return Ok(out);
        }
        out.push(DiskLocn { offset, size });
    }
}

pub(crate) fn u32le(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn u64le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample() -> PvLabel {
        PvLabel {
            sector: 1,
            pv_uuid: Uuid::parse("BFTh2D-6SId-S4OY-a1fq-Sh33-4Ed6-W3yQgy").unwrap(),
            device_size: 67108864,
            data_areas: vec![DiskLocn {
                offset: 1048576,
                size: 0,
            }],
            metadata_areas: vec![
                DiskLocn {
                    offset: 4096,
                    size: 1044480,
                },
                DiskLocn {
                    offset: 66060288,
                    size: 1048576,
                },
            ],
            ext_version: 2,
            ext_flags: PV_EXT_USED,
            bootloader_areas: vec![],
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let l = sample();
        let s = l.encode().unwrap();
        // Extension sits at 152 with two mdas (spec 1.3).
        assert_eq!(u32le(&s, 152), 2);
        assert_eq!(u32le(&s, 156), 1);
        assert_eq!(PvLabel::decode(&s, 1).unwrap(), l);
        let mut scan = vec![0u8; 2048];
        scan[512..1024].copy_from_slice(&s);
        assert_eq!(PvLabel::find(&scan).unwrap(), Some(l));
    }

    #[test]
    fn corruption_is_detected() {
        let s = sample().encode().unwrap();
        for i in [8usize, 20, 40, 80, 300] {
            let mut c = s;
            c[i] ^= 0x40;
            assert!(PvLabel::decode(&c, 1).is_err(), "flip at {i}");
        }
        assert!(PvLabel::decode(&s, 2).is_err());
        assert_eq!(PvLabel::find(&[0u8; 2048]).unwrap(), None);
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// Found by fuzzing: version-0 extensions carried stray flags that did
    /// not survive a re-encode.
    #[test]
    fn version_zero_extension_has_no_flags() {
        let mut l = PvLabel::decode(&super::tests::sample().encode().unwrap(), 1).unwrap();
        l.ext_version = 0;
        let mut s = l.encode().unwrap();
        // Stray flag word where the extension would be.
        s[156] = 0x10;
        let crc = crate::crc::lvm_crc(&s[20..]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        let d = PvLabel::decode(&s, 1).unwrap();
        assert_eq!(d.ext_flags, 0);
        assert_eq!(PvLabel::decode(&d.encode().unwrap(), 1).unwrap(), d);
    }
}
