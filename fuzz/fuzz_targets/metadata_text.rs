//! Any bytes as metadata text: parsing never panics; a parsed VG written
//! back parses to the same VG.
#![no_main]
use ferrolvm_metadata::{Trailer, Vg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(vg) = Vg::from_text(data) {
        let t = Trailer { generator: "fuzz".into(), description: String::new(), creation_host: "h".into(), uname: "u".into(), creation_time: 0 };
        let text = vg.to_text(&t);
        let again = Vg::from_text(&text).expect("our own output parses");
        assert_eq!(again.name, vg.name);
        assert_eq!(again.lvs.len(), vg.lvs.len());
        assert_eq!(again.pvs, vg.pvs);
    }
});
