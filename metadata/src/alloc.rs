//! Extent allocation and free-space accounting.
//!
//! The policy approximates LVM's "normal" one: a single contiguous range if
//! one fits, otherwise the lowest free ranges in PV order; an extension first
//! continues the LV's last area in place. Striped allocations take one range
//! per stripe on distinct PVs.

use crate::model::{Area, Segment, Vg};
use crate::Error;

/// Free extent ranges `(start, len)` of each allocatable PV, in VG order.
#[derive(Debug, Clone, PartialEq)]
pub struct FreeMap {
    pub pvs: Vec<(String, Vec<(u32, u32)>)>,
}

impl FreeMap {
    pub fn of(vg: &Vg) -> FreeMap {
        let mut pvs = Vec::new();
        for pv in &vg.pvs {
            let mut used: Vec<(u32, u32)> = vg
                .lvs
                .iter()
                .flat_map(|lv| &lv.segments)
                .flat_map(|seg| {
                    let len = seg.area_len();
                    seg.areas.iter().filter_map(move |a| match a {
                        Area::Pv { pv: k, pe } if *k == pv.key => {
                            Some((*pe, pe.saturating_add(len).min(pv.pe_count)))
                        }
                        _ => None,
                    })
                })
                .collect();
            used.sort();
            let mut free = Vec::new();
            let mut at = 0u32;
            for (s, e) in used {
                if s > at {
                    free.push((at, s - at));
                }
                at = at.max(e);
            }
            if at < pv.pe_count {
                free.push((at, pv.pe_count - at));
            }
            if !pv.allocatable() {
                free.clear();
            }
            pvs.push((pv.key.clone(), free));
        }
        FreeMap { pvs }
    }

    pub fn pv_free(&self, key: &str) -> u64 {
        self.pvs
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, r)| r)
            .map(|r| r.1 as u64)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.pvs
            .iter()
            .flat_map(|(_, r)| r)
            .map(|r| r.1 as u64)
            .sum()
    }

    fn take(&mut self, key: &str, start: u32, len: u32) {
        if let Some((_, ranges)) = self.pvs.iter_mut().find(|(k, _)| k == key) {
            if let Some(i) = ranges
                .iter()
                .position(|&(s, l)| s <= start && start + len <= s + l)
            {
                let (s, l) = ranges.remove(i);
                if start + len < s + l {
                    ranges.insert(i, (start + len, s + l - start - len));
                }
                if start > s {
                    ranges.insert(i, (s, start - s));
                }
            }
        }
    }
}

/// What to allocate.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub extents: u32,
    pub stripes: u32,
    /// Sectors; required when `stripes > 1`.
    pub stripe_size: Option<u32>,
    /// Restrict to these PV section names (`None` = all allocatable PVs).
    pub pvs: Option<&'a [String]>,
}

/// Allocates `req.extents` extents as segments starting at LV extent
/// `first_le`. `continue_after` is the LV's last segment, which an extension
/// tries to lengthen in place first.
pub fn allocate(
    vg: &Vg,
    req: &Request,
    first_le: u32,
    continue_after: Option<&Segment>,
) -> Result<Vec<Segment>, Error> {
    let mut free = FreeMap::of(vg);
    if let Some(allowed) = req.pvs {
        free.pvs.retain(|(k, _)| allowed.contains(k));
    }
    let stripes = req.stripes.max(1);
    let available = free.total();
    let no_space = || Error::NoSpace {
        needed: req.extents as u64,
        free: available,
    };
    if req.extents == 0 {
        return Err(Error::Request("cannot allocate zero extents".into()));
    }
    if !req.extents.is_multiple_of(stripes) {
        return Err(Error::Request(format!(
            "{} extents are not a multiple of {stripes} stripes",
            req.extents
        )));
    }
    let mut segs = Vec::new();
    let mut le = first_le;
    let mut left = req.extents;

    if stripes == 1 {
        // Lengthen the last linear area in place when the next extents are free.
        if let Some(last) = continue_after.filter(|s| s.is_striped() && s.areas.len() == 1) {
            if let Area::Pv { pv, pe } = &last.areas[0] {
                let end = pe + last.extent_count;
                let run = free
                    .pvs
                    .iter()
                    .filter(|(k, _)| k == pv)
                    .flat_map(|(_, r)| r)
                    .find(|&&(s, _)| s == end)
                    .map(|&(_, l)| l.min(left));
                if let Some(n) = run.filter(|&n| n > 0) {
                    free.take(pv, end, n);
                    segs.push(linear(le, n, pv, end));
                    le += n;
                    left -= n;
                }
            }
        }
        if left > 0 {
            // One contiguous range if any PV has one.
            let fit = free.pvs.iter().find_map(|(k, r)| {
                r.iter()
                    .find(|&&(_, l)| l >= left)
                    .map(|&(s, _)| (k.clone(), s))
            });
            if let Some((k, s)) = fit {
                free.take(&k, s, left);
                segs.push(linear(le, left, &k, s));
                left = 0;
            }
        }
        while left > 0 {
            let (k, s, l) = free
                .pvs
                .iter()
                .find_map(|(k, r)| r.first().map(|&(s, l)| (k.clone(), s, l)))
                .ok_or_else(no_space)?;
            let n = l.min(left);
            free.take(&k, s, n);
            segs.push(linear(le, n, &k, s));
            le += n;
            left -= n;
        }
        return Ok(merge_adjacent(segs));
    }

    let stripe_size = req
        .stripe_size
        .ok_or_else(|| Error::Request("a striped LV needs a stripe size".into()))?;
    while left > 0 {
        // The largest free range of each PV; the `stripes` largest on distinct PVs.
        let mut best: Vec<(String, u32, u32)> = free
            .pvs
            .iter()
            .filter_map(|(k, r)| {
                r.iter()
                    .max_by_key(|&&(s, l)| (l, std::cmp::Reverse(s)))
                    .map(|&(s, l)| (k.clone(), s, l))
            })
            .collect();
        best.sort_by_key(|b| std::cmp::Reverse(b.2));
        best.truncate(stripes as usize);
        let per = best
            .iter()
            .map(|b| b.2)
            .min()
            .unwrap_or(0)
            .min(left / stripes);
        if best.len() < stripes as usize || per == 0 {
            return Err(Error::Request(format!(
                "insufficient free space: {} extents in {stripes} stripes need {} free extents on each of {stripes} PVs",
                req.extents,
                left / stripes
            )));
        }
        let mut areas = Vec::new();
        for (k, s, _) in &best {
            free.take(k, *s, per);
            areas.push(Area::Pv {
                pv: k.clone(),
                pe: *s,
            });
        }
        segs.push(Segment {
            start_extent: le,
            extent_count: per * stripes,
            segtype: "striped".into(),
            stripe_size: Some(stripe_size),
            areas,
            tags: vec![],
            fields: vec![],
            thin: None,
        });
        le += per * stripes;
        left -= per * stripes;
    }
    Ok(merge_adjacent(segs))
}

fn linear(le: u32, n: u32, pv: &str, pe: u32) -> Segment {
    Segment {
        start_extent: le,
        extent_count: n,
        segtype: "striped".into(),
        stripe_size: None,
        areas: vec![Area::Pv {
            pv: pv.to_string(),
            pe,
        }],
        tags: vec![],
        fields: vec![],
        thin: None,
    }
}

/// Joins striped segments whose every area continues the previous
/// segment's area on the same PV, as LVM does when it reads a VG.
pub fn merge_adjacent(segs: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segs.len());
    for s in segs {
        if let Some(prev) = out.last_mut() {
            if continues(prev, &s) {
                prev.extent_count += s.extent_count;
                continue;
            }
        }
        out.push(s);
    }
    out
}

fn continues(prev: &Segment, next: &Segment) -> bool {
    let compatible = prev.is_striped()
        && next.is_striped()
        && prev.tags.is_empty()
        && next.tags.is_empty()
        && prev.areas.len() == next.areas.len()
        && prev.stripe_size == next.stripe_size
        && prev.start_extent + prev.extent_count == next.start_extent;
    compatible
        && prev
            .areas
            .iter()
            .zip(&next.areas)
            .all(|(a, b)| match (a, b) {
                (Area::Pv { pv: p1, pe: e1 }, Area::Pv { pv: p2, pe: e2 }) => {
                    p1 == p2 && e1 + prev.area_len() == *e2
                }
                _ => false,
            })
}
