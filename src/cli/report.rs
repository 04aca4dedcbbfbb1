//! `lvs`, `vgs`, `pvs`: the same fields, values and JSON shape as lvm2.

use ferrolvm_metadata::alloc::FreeMap;
use ferrolvm_metadata::{Area, Lv, Segment, ThinSegment, Vg};

use crate::lvm::scan::Scan;

/// How sizes are printed (`--units`, `--nosuffix`).
#[derive(Debug, Clone, Copy)]
pub struct Units {
    /// `h` (human, lvm2's default), `b`, `s`, `k`, `m`, `g`, `t`, `p`, `e`.
    pub unit: char,
    pub suffix: bool,
}

impl Units {
    pub fn fmt(&self, bytes: u64) -> String {
        let pow = |c: char| -> Option<u32> { "bkmgtpe".find(c).map(|i| i as u32) };
        match self.unit.to_ascii_lowercase() {
            'b' => format!("{bytes}{}", if self.suffix { "B" } else { "" }),
            's' => format!("{}{}", bytes / 512, if self.suffix { "S" } else { "" }),
            'h' | 'r' => {
                let mut p = 1;
                while p < 6 && bytes >= 1024u64.pow(p + 1) {
                    p += 1;
                }
                self.scaled(bytes, p, "bkmgtpe".as_bytes()[p as usize] as char)
            }
            c => match pow(c) {
                Some(p) => self.scaled(bytes, p, c),
                None => bytes.to_string(),
            },
        }
    }

    fn scaled(&self, bytes: u64, p: u32, c: char) -> String {
        let div = 1024f64.powi(p as i32);
        let v = bytes as f64 / div;
        let rounded = (v * 100.0).round() / 100.0;
        let lt = if rounded > v + 1e-9 { "<" } else { "" };
        format!(
            "{lt}{rounded:.2}{}",
            if self.suffix {
                c.to_string()
            } else {
                String::new()
            }
        )
    }
}

pub type Row = Vec<(String, String)>;

pub const LVS_DEFAULT: &str = "lv_name,vg_name,lv_attr,lv_size,pool_lv,origin,data_percent,metadata_percent,move_pv,mirror_log,copy_percent,convert_lv";
pub const VGS_DEFAULT: &str = "vg_name,pv_count,lv_count,snap_count,vg_attr,vg_size,vg_free";
pub const PVS_DEFAULT: &str = "pv_name,vg_name,pv_fmt,pv_attr,pv_size,pv_free";
const SEG_FIELDS: &[&str] = &[
    "segtype",
    "stripes",
    "devices",
    "stripe_size",
    "seg_start",
    "seg_size",
    "seg_pe_ranges",
];

/// Expands `-o` like lvm2: `+f` appends to the defaults.
pub fn fields(requested: Option<&str>, default: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    match requested {
        None => out.extend(default.split(',').map(str::to_string)),
        Some(r) => {
            let r = r.trim();
            if let Some(extra) = r.strip_prefix('+') {
                out.extend(default.split(',').map(str::to_string));
                out.extend(extra.split(',').map(|s| s.trim().to_string()));
            } else {
                out.extend(r.split(',').map(|s| s.trim().to_string()));
            }
        }
    }
    out.retain(|f| !f.is_empty());
    out
}

fn sorted_tags(tags: &[String]) -> String {
    let mut t = tags.to_vec();
    t.sort();
    t.join(",")
}

/// Whether device-mapper can be asked about LV state here.
/// The control node can exist without the kernel driver, so ask the kernel.
pub fn dm_available() -> bool {
    std::fs::read_to_string("/proc/misc")
        .map(|m| m.lines().any(|l| l.ends_with(" device-mapper")))
        .unwrap_or(false)
}

/// (state, open) columns of `lv_attr` from the kernel: `a`/`s`/`-` and `o`/`-`.
fn dm_state(vg: &Vg, lv: &Lv) -> (char, char) {
    let Some(dm) = dm_handle() else {
        return ('-', '-');
    };
    // Layered LVs are found by the uuid suffix of their role, as lvm2 does.
    let suffix = match lv.segments.first().and_then(|s| s.thin.as_ref()) {
        Some(ThinSegment::Pool { .. }) => Some("tpool"),
        _ if lv.name.ends_with("_tdata") => Some("tdata"),
        _ if lv.name.ends_with("_tmeta") => Some("tmeta"),
        _ => None,
    };
    match dm.info(&crate::lvm::activate::dm_uuid(vg, lv, suffix)) {
        None => ('-', '-'),
        Some(info) => {
            let suspended = info.flags().contains(devicemapper::DmFlags::DM_SUSPEND);
            (
                if suspended { 's' } else { 'a' },
                if info.open_count() > 0 { 'o' } else { '-' },
            )
        }
    }
}

pub fn lv_attr(vg: &Vg, lv: &Lv) -> String {
    let seg = lv.segments.first();
    let segtype = seg.map(|s| s.segtype.as_str()).unwrap_or("");
    let mut a = ['-'; 10];
    a[0] = match segtype {
        "thin-pool" => 't',
        "thin" => 'V',
        _ if lv.name.ends_with("_tmeta") || lv.name.ends_with("_pmspare") => 'e',
        _ if lv.name.ends_with("_tdata") => 'T',
        _ => '-',
    };
    a[1] = if lv.status.iter().any(|s| s == "WRITE") {
        'w'
    } else {
        'r'
    };
    a[2] = match lv.allocation_policy.as_deref() {
        None => 'i',
        Some("contiguous") => 'c',
        Some("cling") | Some("cling_by_tags") => 'l',
        Some("anywhere") => 'a',
        Some(_) => 'n',
    };
    if lv.status.iter().any(|s| s == "FIXED_MINOR") {
        a[3] = 'm';
    }
    if !dm_available() {
        a[4] = 'X';
        a[5] = 'X';
    } else {
        (a[4], a[5]) = dm_state(vg, lv);
    }
    if segtype == "thin" || segtype == "thin-pool" {
        a[6] = 't';
    }
    // Zeroing of new blocks: shown on the pool and on its thin LVs.
    let pool_of = |seg: Option<&Segment>| match seg.and_then(|s| s.thin.as_ref()) {
        Some(ThinSegment::Pool {
            zero_new_blocks, ..
        }) => Some(*zero_new_blocks),
        Some(ThinSegment::Thin { thin_pool, .. }) => match vg
            .lv(thin_pool)
            .and_then(|p| p.segments.first())
            .and_then(|s| s.thin.as_ref())
        {
            Some(ThinSegment::Pool {
                zero_new_blocks, ..
            }) => Some(*zero_new_blocks),
            _ => None,
        },
        None => None,
    };
    if pool_of(seg) == Some(true) {
        a[7] = 'z';
    }
    if lv.flags.iter().any(|f| f == "ACTIVATION_SKIP") {
        a[9] = 'k';
    }
    a.iter().collect()
}

fn devices(vg: &Vg, scan: &Scan, found_devs: &dyn Fn(&str) -> String, seg: &Segment) -> String {
    let _ = (vg, scan);
    seg.areas
        .iter()
        .map(|a| match a {
            Area::Pv { pv, pe } => format!("{}({pe})", found_devs(pv)),
            Area::Lv { lv, le } => format!("{lv}({le})"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// PV section name -> device path for one VG.
fn pv_path_fn<'a>(vg: &'a Vg, scan: &'a Scan) -> impl Fn(&str) -> String + 'a {
    move |key: &str| {
        let Some(pv) = vg.pv(key) else {
            return key.to_string();
        };
        scan.assembly
            .vgs
            .iter()
            .find(|f| f.vg.id == vg.id)
            .and_then(|f| f.pv_devs.get(&pv.id))
            .map(|&d| scan.path_of(d))
            .unwrap_or_else(|| "[unknown]".into())
    }
}

pub fn lv_rows(
    scan: &Scan,
    select: &[String],
    fields: &[String],
    units: Units,
    all: bool,
) -> Vec<Row> {
    let per_seg = fields.iter().any(|f| SEG_FIELDS.contains(&f.as_str()));
    let mut rows = Vec::new();
    for found in &scan.assembly.vgs {
        let vg = &found.vg;
        let paths = pv_path_fn(vg, scan);
        // lvm2 sorts LV reports by VG name, then LV name.
        let mut lvs: Vec<&Lv> = vg.lvs.iter().collect();
        lvs.sort_by(|a, b| a.name.cmp(&b.name));
        for lv in lvs {
            let wanted = select.is_empty()
                || select
                    .iter()
                    .any(|s| s == &vg.name || *s == format!("{}/{}", vg.name, lv.name));
            if !wanted || (!all && !lv.visible()) {
                continue;
            }
            let segs: Vec<Option<&Segment>> = if per_seg {
                lv.segments.iter().map(Some).collect()
            } else {
                vec![lv.segments.first()]
            };
            for seg in segs {
                let row = fields
                    .iter()
                    .map(|f| {
                        let bytes = |ext: u64| units.fmt(ext * vg.extent_size as u64 * 512);
                        let v = match f.as_str() {
                            "lv_name" => {
                                if lv.visible() {
                                    lv.name.clone()
                                } else {
                                    format!("[{}]", lv.name)
                                }
                            }
                            "vg_name" => vg.name.clone(),
                            "lv_uuid" => lv.id.dashed(),
                            "lv_size" => bytes(lv.extent_count() as u64),
                            "lv_attr" => lv_attr(vg, lv),
                            "lv_tags" => sorted_tags(&lv.tags),
                            "lv_path" => {
                                if lv.visible() {
                                    format!("/dev/{}/{}", vg.name, lv.name)
                                } else {
                                    String::new()
                                }
                            }
                            "seg_count" => lv.segments.len().to_string(),
                            "segtype" => seg
                                .map(|s| Lv::segtype_of(s).to_string())
                                .unwrap_or_default(),
                            "stripes" => seg
                                .map(|s| if s.is_striped() { s.areas.len() } else { 1 }.to_string())
                                .unwrap_or_default(),
                            "stripe_size" => {
                                units.fmt(seg.and_then(|s| s.stripe_size).unwrap_or(0) as u64 * 512)
                            }
                            "seg_start" => bytes(seg.map(|s| s.start_extent as u64).unwrap_or(0)),
                            "seg_size" => bytes(seg.map(|s| s.extent_count as u64).unwrap_or(0)),
                            "devices" => seg
                                .map(|s| devices(vg, scan, &paths, s))
                                .unwrap_or_default(),
                            "pool_lv" => match lv.segments.first().and_then(|s| s.thin.as_ref()) {
                                Some(ThinSegment::Thin { thin_pool, .. }) => thin_pool.clone(),
                                _ => String::new(),
                            },
                            "origin" => match lv.segments.first().and_then(|s| s.thin.as_ref()) {
                                Some(ThinSegment::Thin {
                                    origin: Some(o), ..
                                }) => o.clone(),
                                _ => String::new(),
                            },
                            "data_percent" => usage(vg, lv).0,
                            "metadata_percent" => usage(vg, lv).1,
                            _ => String::new(),
                        };
                        (f.clone(), v)
                    })
                    .collect();
                rows.push(row);
            }
        }
    }
    rows
}

fn dm_handle() -> Option<&'static crate::lvm::activate::Dm> {
    static DM: std::sync::OnceLock<Option<crate::lvm::activate::Dm>> = std::sync::OnceLock::new();
    DM.get_or_init(|| crate::lvm::activate::Dm::open().ok())
        .as_ref()
}

/// lvm2's Data% and Meta% for active thin pools and thin LVs, from the
/// kernel's status; empty otherwise.
fn usage(vg: &Vg, lv: &Lv) -> (String, String) {
    let pct = |used: u64, total: u64| {
        if total == 0 {
            String::new()
        } else {
            format!("{:.2}", used as f64 * 100.0 / total as f64)
        }
    };
    let Some(dm) = dm_handle() else {
        return (String::new(), String::new());
    };
    match lv.segments.first().and_then(|s| s.thin.as_ref()) {
        Some(ThinSegment::Pool { .. }) => match dm.pool_status(vg, &lv.name) {
            Ok(Some(st)) => (pct(st.data.0, st.data.1), pct(st.metadata.0, st.metadata.1)),
            _ => (String::new(), String::new()),
        },
        Some(ThinSegment::Thin { .. }) => match dm.thin_mapped(vg, lv) {
            Some(mapped) => (
                pct(mapped, lv.extent_count() as u64 * vg.extent_size as u64),
                String::new(),
            ),
            None => (String::new(), String::new()),
        },
        None => (String::new(), String::new()),
    }
}

pub fn vg_attr(vg: &Vg) -> String {
    let has = |w: &str| vg.status.iter().any(|s| s == w);
    let mut a = ['-'; 6];
    a[0] = if has("WRITE") { 'w' } else { 'r' };
    if has("RESIZEABLE") {
        a[1] = 'z';
    }
    if has("EXPORTED") {
        a[2] = 'x';
    }
    if has("PARTIAL") {
        a[3] = 'p';
    }
    a[4] = match vg.allocation_policy.as_deref() {
        Some("contiguous") => 'c',
        Some("cling") | Some("cling_by_tags") => 'l',
        Some("anywhere") => 'a',
        _ => 'n',
    };
    if has("CLUSTERED") {
        a[5] = 'c';
    } else if vg.lock_type.is_some() {
        a[5] = 's';
    }
    a.iter().collect()
}

pub fn vg_rows(scan: &Scan, select: &[String], fields: &[String], units: Units) -> Vec<Row> {
    let mut rows = Vec::new();
    for found in &scan.assembly.vgs {
        let vg = &found.vg;
        if !select.is_empty() && !select.contains(&vg.name) {
            continue;
        }
        let free = FreeMap::of(vg).total();
        let es = vg.extent_size as u64 * 512;
        rows.push(
            fields
                .iter()
                .map(|f| {
                    let v = match f.as_str() {
                        "vg_name" => vg.name.clone(),
                        "vg_uuid" => vg.id.dashed(),
                        "vg_size" => units.fmt(vg.extent_count() * es),
                        "vg_free" => units.fmt(free * es),
                        "vg_extent_size" => units.fmt(es),
                        "vg_extent_count" => vg.extent_count().to_string(),
                        "vg_free_count" => free.to_string(),
                        "pv_count" => vg.pvs.len().to_string(),
                        "lv_count" => vg.visible_lv_count().to_string(),
                        "snap_count" => "0".into(),
                        "vg_seqno" => vg.seqno.to_string(),
                        "vg_tags" => sorted_tags(&vg.tags),
                        "vg_attr" => vg_attr(vg),
                        "vg_systemid" => vg.system_id.clone().unwrap_or_default(),
                        "vg_mda_count" => found.copies.len().to_string(),
                        _ => String::new(),
                    };
                    (f.clone(), v)
                })
                .collect(),
        );
    }
    rows
}

pub fn pv_rows(scan: &Scan, select: &[String], fields: &[String], units: Units) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut order: Vec<usize> = (0..scan.devices.len()).collect();
    order.sort_by(|&a, &b| scan.devices[a].path.cmp(&scan.devices[b].path));
    for dev in order {
        let d = &scan.devices[dev];
        let Some(label) = &d.label else { continue };
        let path = d.path.display().to_string();
        if !select.is_empty() && !select.contains(&path) {
            continue;
        }
        let found = scan
            .assembly
            .vgs
            .iter()
            .find(|f| f.pv_devs.get(&label.pv_uuid) == Some(&dev));
        let pv = found.and_then(|f| f.vg.pv_by_id(&label.pv_uuid));
        let pe_start = label.pe_start().unwrap_or(0);
        let (size, free, pe_count, alloc_count) = match (found, pv) {
            (Some(f), Some(pv)) => {
                let es = f.vg.extent_size as u64 * 512;
                let free = FreeMap::of(&f.vg).pv_free(&pv.key);
                let count = pv.pe_count as u64;
                (count * es, free * es, count, count - free)
            }
            _ => (d.size, d.size, 0, 0),
        };
        rows.push(
            fields
                .iter()
                .map(|f| {
                    let v = match f.as_str() {
                        "pv_name" => path.clone(),
                        "pv_uuid" => label.pv_uuid.dashed(),
                        "vg_name" => found.map(|f| f.vg.name.clone()).unwrap_or_default(),
                        "pv_size" => units.fmt(size),
                        "pv_free" => units.fmt(free),
                        "dev_size" => units.fmt(d.size),
                        "pe_start" => units.fmt(pe_start),
                        "pv_pe_count" => pe_count.to_string(),
                        "pv_pe_alloc_count" => alloc_count.to_string(),
                        "pv_fmt" => "lvm2".into(),
                        "pv_attr" => match pv {
                            Some(p) => format!("{}--", if p.allocatable() { 'a' } else { '-' }),
                            None => "---".into(),
                        },
                        "pv_tags" => pv.map(|p| sorted_tags(&p.tags)).unwrap_or_default(),
                        "pv_mda_count" => label.metadata_areas.len().to_string(),
                        _ => String::new(),
                    };
                    (f.clone(), v)
                })
                .collect(),
        );
    }
    rows
}

/// lvm2's JSON layout (`--reportformat json`).
pub fn json(kind: &str, rows: &[Row]) -> String {
    let mut out = String::from("  {\n      \"report\": [\n          {\n");
    out.push_str(&format!("              \"{kind}\": [\n"));
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}:{}",
                    serde_json::to_string(k).unwrap_or_default(),
                    serde_json::to_string(v).unwrap_or_default()
                )
            })
            .collect();
        out.push_str(&format!(
            "                  {{{}}}{}\n",
            cells.join(", "),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    out.push_str("              ]\n          }\n      ]\n  }\n");
    out
}

/// Column output with lvm2-style headings.
pub fn columns(rows: &[Row], fields: &[String], headings: bool) -> String {
    let head = |f: &str| -> String {
        match f {
            "lv_name" => "LV",
            "vg_name" => "VG",
            "lv_attr" => "Attr",
            "lv_size" => "LSize",
            "pool_lv" => "Pool",
            "origin" => "Origin",
            "data_percent" => "Data%",
            "metadata_percent" => "Meta%",
            "move_pv" => "Move",
            "mirror_log" => "Log",
            "copy_percent" => "Cpy%Sync",
            "convert_lv" => "Convert",
            "pv_count" => "#PV",
            "lv_count" => "#LV",
            "snap_count" => "#SN",
            "vg_attr" => "Attr",
            "vg_size" => "VSize",
            "vg_free" => "VFree",
            "pv_name" => "PV",
            "pv_fmt" => "Fmt",
            "pv_attr" => "Attr",
            "pv_size" => "PSize",
            "pv_free" => "PFree",
            other => other,
        }
        .to_string()
    };
    let mut table: Vec<Vec<String>> = Vec::new();
    if headings {
        table.push(fields.iter().map(|f| head(f)).collect());
    }
    for r in rows {
        table.push(r.iter().map(|(_, v)| v.clone()).collect());
    }
    let widths: Vec<usize> = (0..fields.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in table {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str("  ");
        out.push_str(line.join(" ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_like_lvm() {
        let h = Units {
            unit: 'h',
            suffix: true,
        };
        assert_eq!(h.fmt(16 << 20), "16.00m");
        assert_eq!(h.fmt(180 << 20), "180.00m");
        assert_eq!(h.fmt(1 << 30), "1.00g");
        assert_eq!(h.fmt((1 << 30) - 4096), "<1024.00m");
        assert_eq!(
            Units {
                unit: 'b',
                suffix: false
            }
            .fmt(4194304),
            "4194304"
        );
        assert_eq!(
            Units {
                unit: 'b',
                suffix: true
            }
            .fmt(4194304),
            "4194304B"
        );
    }

    #[test]
    fn field_lists() {
        assert_eq!(fields(Some("+devices"), "a,b"), vec!["a", "b", "devices"]);
        assert_eq!(fields(Some("x, y"), "a"), vec!["x", "y"]);
    }
}
