//! Any 2048 bytes: finding and decoding a label never panics, and a decoded
//! label re-encodes to a sector that decodes to the same label.
#![no_main]
use ferrolvm_metadata::label::PvLabel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut scan = [0u8; 2048];
    let n = data.len().min(2048);
    scan[..n].copy_from_slice(&data[..n]);
    // Seeds are a bare label sector: also try it in sector 1.
    if n <= 512 {
        scan[512..512 + n].copy_from_slice(&data[..n]);
    }
    if let Ok(Some(l)) = PvLabel::find(&scan) {
        if let Ok(sector) = l.encode() {
            assert_eq!(PvLabel::decode(&sector, l.sector).unwrap(), l);
        }
    }
});
