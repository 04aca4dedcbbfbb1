//! Property tests: random sequences of VG changes keep the allocator's
//! invariants and survive model -> text -> model unchanged.

use ferrolvm_metadata::alloc::FreeMap;
use ferrolvm_metadata::ops::{self, NewLv, NewPv};
use ferrolvm_metadata::{Area, Trailer, Uuid, Vg};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create { extents: u32, stripes: u32 },
    Extend { which: usize, by: u32 },
    Reduce { which: usize, by: u32 },
    Remove { which: usize },
    Rename { which: usize },
    Tag { which: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..40, 1u32..4).prop_map(|(extents, stripes)| Op::Create { extents, stripes }),
        2 => (0usize..50, 1u32..30).prop_map(|(which, by)| Op::Extend { which, by }),
        1 => (0usize..50, 1u32..10).prop_map(|(which, by)| Op::Reduce { which, by }),
        1 => (0usize..50).prop_map(|which| Op::Remove { which }),
        1 => (0usize..50).prop_map(|which| Op::Rename { which }),
        1 => (0usize..50).prop_map(|which| Op::Tag { which }),
    ]
}

fn uuid(n: u32) -> Uuid {
    let mut b = [0u8; 32];
    b[0] = (n % 62) as u8;
    b[1] = (n / 62 % 62) as u8;
    b[2] = (n / 3844) as u8;
    Uuid::from_random(b)
}

fn vg(pv_extents: &[u32]) -> Vg {
    let pvs: Vec<NewPv> = pv_extents
        .iter()
        .enumerate()
        .map(|(i, &n)| NewPv {
            id: uuid(10_000 + i as u32),
            device: format!("/dev/x{i}"),
            dev_size: 2048 + n as u64 * 8192,
            pe_start: 2048,
            data_sectors: n as u64 * 8192,
        })
        .collect();
    ops::new_vg("prop-vg", uuid(9_999), 8192, &pvs, vec!["t".into()]).unwrap()
}

fn trailer() -> Trailer {
    Trailer {
        generator: "p".into(),
        description: "d".into(),
        creation_host: "h".into(),
        uname: "u".into(),
        creation_time: 7,
    }
}

/// No two areas overlap, every area is inside its PV, every LV is tiled,
/// and free + used extents add up to the VG size.
fn check_invariants(vg: &Vg) {
    vg.validate().unwrap();
    let mut used = 0u64;
    for lv in &vg.lvs {
        let mut next = 0;
        for s in &lv.segments {
            assert_eq!(s.start_extent, next, "{} not tiled", lv.name);
            next += s.extent_count;
            for a in &s.areas {
                if let Area::Pv { .. } = a {
                    used += s.area_len() as u64;
                }
            }
        }
    }
    assert_eq!(FreeMap::of(vg).total() + used, vg.extent_count());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_changes_keep_invariants_and_round_trip(pv_extents in proptest::collection::vec(5u32..200, 1..5), ops in proptest::collection::vec(op(), 1..40)) {
        let mut vg = vg(&pv_extents);
        let mut n = 0u32;
        for op in ops {
            n += 1;
            let before = vg.clone();
            let names: Vec<String> = vg.lvs.iter().map(|l| l.name.clone()).collect();
            let pick = |w: usize| names.get(w % names.len().max(1)).cloned();
            let r = match op {
                Op::Create { extents, stripes } => {
                    let extents = extents.div_ceil(stripes) * stripes;
                    let new = NewLv { name: format!("lv-{n}.x+"), id: uuid(n), tags: vec![], creation_time: 1, creation_host: "h".into() };
                    ops::create_lv(&mut vg, new, extents, stripes, (stripes > 1).then_some(128), None)
                }
                Op::Extend { which, by } => match pick(which) {
                    Some(name) => { let cur = vg.lv(&name).unwrap().extent_count(); ops::extend_lv(&mut vg, &name, cur + by, None) }
                    None => Ok(()),
                },
                Op::Reduce { which, by } => match pick(which) {
                    Some(name) => { let cur = vg.lv(&name).unwrap().extent_count(); ops::reduce_lv(&mut vg, &name, cur.saturating_sub(by)) }
                    None => Ok(()),
                },
                Op::Remove { which } => match pick(which) { Some(name) => ops::remove_lv(&mut vg, &name), None => Ok(()) },
                Op::Rename { which } => match pick(which) { Some(name) => ops::rename_lv(&mut vg, &name, &format!("r{n}")), None => Ok(()) },
                Op::Tag { which } => match pick(which) { Some(name) => ops::add_lv_tags(&mut vg, &name, &[format!("tag{n}")]), None => Ok(()) },
            };
            if r.is_err() {
                // A refused change leaves the VG exactly as it was.
                prop_assert_eq!(&vg, &before);
            }
            check_invariants(&vg);
            vg.seqno += 1;
            let text = vg.to_text(&trailer());
            let back = Vg::from_text(&text).unwrap();
            prop_assert_eq!(&back, &vg);
            prop_assert_eq!(back.to_text(&trailer()), text);
        }
    }
}
