//! Any sector as an mda header: decoding never panics; a valid header
//! re-encodes identically and placement of any length is in bounds.
#![no_main]
use ferrolvm_metadata::mda::MdaHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut s = [0u8; 512];
    let n = data.len().min(512);
    s[..n].copy_from_slice(&data[..n]);
    let start = u64::from_le_bytes(s[24..32].try_into().unwrap());
    if let Ok(h) = MdaHeader::decode(&s, start) {
        assert_eq!(MdaHeader::decode(&h.encode(), start).unwrap(), h);
        let len = (data.len() as u64).wrapping_mul(977) % (h.size + 1);
        if let Ok(p) = h.place(len) {
            assert!(p.offset >= 512 && p.offset + p.first <= h.size);
        }
    }
});
