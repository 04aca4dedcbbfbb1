//! Parses and serializes a 2,000-LV VG in a loop, for profiling.
use ferrolvm_metadata::ops::{self, NewLv, NewPv};
use ferrolvm_metadata::{Trailer, Uuid, Vg};

fn main() {
    let uuid = |n: u32| {
        let mut b = [0u8; 32];
        b[0] = (n % 62) as u8;
        b[1] = (n / 62 % 62) as u8;
        b[2] = (n / 3844) as u8;
        Uuid::from_random(b)
    };
    let pvs: Vec<NewPv> = (0..4)
        .map(|i| NewPv {
            id: uuid(900_000 + i),
            device: format!("/dev/sd{i}"),
            dev_size: 1 << 31,
            pe_start: 2048,
            data_sectors: (1 << 31) - 2048,
        })
        .collect();
    let mut vg = ops::new_vg("bench", uuid(999_999), 8192, &pvs, vec![]).unwrap();
    for i in 0..2000 {
        let new = NewLv {
            name: format!("pvc-{i:08}"),
            id: uuid(i),
            tags: vec![format!("t={i}")],
            creation_time: 1,
            creation_host: "n".into(),
        };
        ops::create_lv(&mut vg, new, 1 + i % 7, 1, None, None).unwrap();
    }
    let t = Trailer {
        generator: "b".into(),
        description: "d".into(),
        creation_host: "h".into(),
        uname: "u".into(),
        creation_time: 1,
    };
    let text = vg.to_text(&t);
    let start = std::time::Instant::now();
    for _ in 0..100 {
        let v = Vg::from_text(&text).unwrap();
        std::hint::black_box(v);
    }
    eprintln!("parse: {:?} per VG", start.elapsed() / 100);
}
