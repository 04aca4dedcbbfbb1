//! The LVM2 checksum: reflected CRC-32 (0xEDB88320) with LVM's own initial
//! state and no final inversion.
//!
//! `crc32fast` inverts the state on entry and on exit, so LVM's raw CRC with
//! state `S` is `!crc32fast(!S, data)`. Chaining `update` calls is allowed,
//! which the circular buffer needs for a wrapped metadata copy.

/// Initial state LVM uses for labels, mda headers, metadata text, hints and
/// the devices file.
pub const INITIAL_CRC: u32 = 0xF597_A6CF;

/// Incremental LVM CRC.
#[derive(Clone)]
pub struct LvmCrc(crc32fast::Hasher);

impl LvmCrc {
    /// Starts from LVM's initial state.
    pub fn new() -> Self {
        Self::with_state(INITIAL_CRC)
    }

    /// Starts from an arbitrary raw state.
    pub fn with_state(state: u32) -> Self {
        LvmCrc(crc32fast::Hasher::new_with_initial(!state))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> u32 {
        !self.0.finalize()
    }
}

impl Default for LvmCrc {
    fn default() -> Self {
        Self::new()
    }
}

/// One-shot LVM CRC of `data` from the initial state.
pub fn lvm_crc(data: &[u8]) -> u32 {
    let mut c = LvmCrc::new();
    c.update(data);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the format spec (cross-checked with a bitwise CRC and zlib).
    #[test]
    fn spec_vectors() {
        assert_eq!(lvm_crc(b""), 0xF597A6CF);
        assert_eq!(lvm_crc(b"a"), 0x319B1949);
        assert_eq!(lvm_crc(b"hello world"), 0xE9A53790);
        assert_eq!(lvm_crc(b"123456789"), 0x4991CF02);
        assert_eq!(lvm_crc(&[0u8; 492]), 0x02C81F10);
        assert_eq!(lvm_crc(&[0u8; 508]), 0x6702D122);
    }

    #[test]
    fn chained_equals_one_shot() {
        let data = b"the quick brown fox jumps over the lazy dog";
        for split in 0..data.len() {
            let mut c = LvmCrc::new();
            c.update(&data[..split]);
            c.update(&data[split..]);
            assert_eq!(c.finish(), lvm_crc(data), "split at {split}");
        }
    }

    /// A bitwise reference implementation, independent of crc32fast.
    fn bitwise(mut crc: u32, data: &[u8]) -> u32 {
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    proptest::proptest! {
        #[test]
        fn matches_bitwise(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            proptest::prop_assert_eq!(lvm_crc(&data), bitwise(INITIAL_CRC, &data));
        }
    }
}
