//! The typed VG model, built from the config tree and written back in LVM's
//! raw on-disk layout.
//!
//! What ferrolvm manages (linear/striped LVs) is fully typed. Everything else
//! — LVs with other segment types, unknown keys, the historical-LV section —
//! keeps its exact source text and is written back byte for byte.

use std::collections::{HashMap, HashSet};

use crate::config::{self, Node, NodeValue, Value};
use crate::{names, Error, Uuid};

pub const VG_STATUS: &[&str] = &[
    "EXPORTED",
    "RESIZEABLE",
    "PVMOVE",
    "READ",
    "WRITE",
    "CLUSTERED",
    "SHARED",
    "PARTIAL",
];
pub const PV_STATUS: &[&str] = &["ALLOCATABLE", "EXPORTED", "MISSING"];
const VG_KEYS: &[&str] = &[
    "id",
    "seqno",
    "format",
    "status",
    "flags",
    "tags",
    "system_id",
    "lock_type",
    "lock_args",
    "extent_size",
    "max_lv",
    "max_pv",
    "allocation_policy",
    "profile",
    "metadata_copies",
    "physical_volumes",
    "logical_volumes",
];
const PV_KEYS: &[&str] = &[
    "id", "device", "status", "flags", "tags", "dev_size", "pe_start", "pe_count",
];
const LV_KEYS: &[&str] = &[
    "id",
    "status",
    "flags",
    "tags",
    "creation_time",
    "creation_host",
    "allocation_policy",
    "read_ahead",
    "major",
    "minor",
    "segment_count",
];
/// LV status words of plain linear/striped LVs that ferrolvm may modify.
const MANAGED_LV_STATUS: &[&str] = &["READ", "WRITE", "VISIBLE", "FIXED_MINOR"];

/// A key or section ferrolvm does not interpret, kept with its source text and
/// the known key it followed, so it is written back where it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Extra {
    pub after: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vg {
    pub name: String,
    pub id: Uuid,
    pub seqno: u32,
    pub format: Option<String>,
    pub status: Vec<String>,
    pub flags: Vec<String>,
    pub tags: Vec<String>,
    pub system_id: Option<String>,
    pub lock_type: Option<String>,
    pub lock_args: Option<String>,
    /// Sectors.
    pub extent_size: u32,
    pub max_lv: u32,
    pub max_pv: u32,
    pub allocation_policy: Option<String>,
    pub profile: Option<String>,
    pub metadata_copies: Option<u32>,
    pub pvs: Vec<Pv>,
    pub lvs: Vec<Lv>,
    /// The `historical_logical_volumes` section, verbatim.
    pub historical: Option<String>,
    pub historical_names: Vec<String>,
    pub extras: Vec<Extra>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pv {
    /// Section name (`pv0`, ...) that segments refer to.
    pub key: String,
    pub id: Uuid,
    pub device: Option<String>,
    pub status: Vec<String>,
    pub flags: Vec<String>,
    pub tags: Vec<String>,
    /// Sectors.
    pub dev_size: u64,
    /// Sectors.
    pub pe_start: u64,
    pub pe_count: u32,
    pub extras: Vec<Extra>,
}

impl Pv {
    pub fn allocatable(&self) -> bool {
        self.status.iter().any(|s| s == "ALLOCATABLE")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Area {
    Pv { pv: String, pe: u32 },
    Lv { lv: String, le: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_extent: u32,
    pub extent_count: u32,
    pub segtype: String,
    /// Sectors; striped segments with more than one stripe only.
    pub stripe_size: Option<u32>,
    pub areas: Vec<Area>,
    pub tags: Vec<String>,
    /// Scalar fields of other segment types (thin_pool, origin, device_id, ...), for reports.
    pub fields: Vec<(String, Value)>,
    /// Typed view of thin-pool and thin segments.
    pub thin: Option<ThinSegment>,
}

/// A message queued in a thin-pool segment for the kernel pool.
#[derive(Debug, Clone, PartialEq)]
pub enum ThinMessage {
    Create { lv: String },
    Delete { device_id: u32 },
}

/// The thin-pool and thin segment types.
#[derive(Debug, Clone, PartialEq)]
pub enum ThinSegment {
    Pool {
        /// The `_tmeta` LV.
        metadata: String,
        /// The `_tdata` LV.
        pool: String,
        transaction_id: u64,
        /// Sectors.
        chunk_size: u32,
        discards: Option<String>,
        zero_new_blocks: bool,
        messages: Vec<ThinMessage>,
    },
    Thin {
        thin_pool: String,
        transaction_id: u64,
        device_id: u32,
        origin: Option<String>,
        external_origin: Option<String>,
    },
}

impl Segment {
    pub fn is_striped(&self) -> bool {
        self.segtype == "striped"
    }

    /// Extents each PV area occupies. For segment types ferrolvm does not
    /// model this is the whole segment length: an over-estimate that keeps
    /// the allocator away from every extent they might use.
    pub fn area_len(&self) -> u32 {
        if self.is_striped() && !self.areas.is_empty() {
            self.extent_count / self.areas.len() as u32
        } else {
            self.extent_count
        }
    }

    pub fn field(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lv {
    pub name: String,
    pub id: Uuid,
    pub status: Vec<String>,
    pub flags: Vec<String>,
    pub tags: Vec<String>,
    pub creation_time: Option<u64>,
    pub creation_host: Option<String>,
    pub allocation_policy: Option<String>,
    pub read_ahead: Option<i64>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub segments: Vec<Segment>,
    /// Source text of an LV ferrolvm does not manage; written back unchanged.
    pub verbatim: Option<String>,
    pub extras: Vec<Extra>,
}

impl Lv {
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }
    pub fn managed(&self) -> bool {
        self.verbatim.is_none()
    }
    pub fn extent_count(&self) -> u32 {
        self.segments.iter().map(|s| s.extent_count).sum()
    }
    /// LVM's segment type name for reports (`linear` is a 1-stripe `striped`).
    pub fn segtype_of(seg: &Segment) -> &str {
        if seg.is_striped() && seg.areas.len() == 1 {
            "linear"
        } else {
            seg.segtype.split('+').next().unwrap_or(&seg.segtype)
        }
    }
}

/// The header fields written after the VG block.
#[derive(Debug, Clone)]
pub struct Trailer {
    /// Goes after "# Generated by ".
    pub generator: String,
    pub description: String,
    pub creation_host: String,
    /// uname fields joined by spaces: sysname nodename release version machine.
    pub uname: String,
    /// Seconds since the epoch; supplied by the caller (this crate reads no clock).
    pub creation_time: u64,
}

// ---------------------------------------------------------------------------
// Reading

struct Fields<'a> {
    nodes: &'a [Node],
    src: &'a [u8],
    /// Indexes of nodes taken as known keys; sections are small, a Vec beats hashing.
    used: Vec<bool>,
    what: &'static str,
}

impl<'a> Fields<'a> {
    /// Refuses sections with a repeated key: LVM would silently use the
    /// first, and a VG read that way is not one ferrolvm may write back.
    fn new(nodes: &'a [Node], src: &'a [u8], what: &'static str) -> Result<Self, Error> {
        let mut keys: Vec<&str> = nodes.iter().map(|n| n.key.as_str()).collect();
        keys.sort_unstable();
        if let Some(dup) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Invalid(format!(
                "{what} section repeats the key {:?}",
                dup[0]
            )));
        }
        Ok(Fields {
            nodes,
            src,
            used: vec![false; nodes.len()],
            what,
        })
    }

    fn take(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.nodes.iter().position(|n| n.key == key)?;
        self.used[i] = true;
        Some(&self.nodes[i])
    }

    fn missing(&self, key: &'static str) -> Error {
        Error::MissingField {
            section: self.what,
            key,
        }
    }

    /// A known key that must be a value, not a section.
    fn value(&mut self, key: &str) -> Option<&'a Value> {
        match self.take(key) {
            Some(n) => match n.as_value() {
                Some(v) => Some(v),
                // Leave it untaken so it is neither lost nor misread: the
                // kind check in `section`/`finish` reports it.
                None => {
                    if let Some(i) = self.nodes.iter().position(|n| n.key == key) {
                        self.used[i] = false;
                    }
                    None
                }
            },
            None => None,
        }
    }

    /// A known key that must be a section, if present.
    fn section(&mut self, key: &'static str) -> Result<Option<&'a [Node]>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(n) => n.children().map(Some).ok_or(Error::BadField {
                section: self.what,
                key,
                why: "expected a section",
            }),
        }
    }

    /// Fails if a known key was present with the wrong kind.
    fn check_kinds(&self, known: &[&str]) -> Result<(), Error> {
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.used[i] && known.contains(&n.key.as_str()) {
                return Err(Error::Invalid(format!(
                    "{} key {:?} has the wrong kind (section vs value)",
                    self.what, n.key
                )));
            }
        }
        Ok(())
    }

    fn str_opt(&mut self, key: &'static str) -> Result<Option<String>, Error> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::BadField {
                section: self.what,
                key,
                why: "expected a string",
            }),
        }
    }

    fn str_req(&mut self, key: &'static str) -> Result<String, Error> {
        self.str_opt(key)?.ok_or_else(|| self.missing(key))
    }

    fn int_opt(&mut self, key: &'static str) -> Result<Option<i64>, Error> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Int(i)) => Ok(Some(*i)),
            Some(_) => Err(Error::BadField {
                section: self.what,
                key,
                why: "expected an integer",
            }),
        }
    }

    fn uint<T: TryFrom<i64>>(&mut self, key: &'static str) -> Result<T, Error> {
        let v = self.int_opt(key)?.ok_or_else(|| self.missing(key))?;
        T::try_from(v).map_err(|_| Error::BadField {
            section: self.what,
            key,
            why: "out of range",
        })
    }

    fn uint_opt<T: TryFrom<i64>>(&mut self, key: &'static str) -> Result<Option<T>, Error> {
        match self.int_opt(key)? {
            None => Ok(None),
            Some(v) => T::try_from(v).map(Some).map_err(|_| Error::BadField {
                section: self.what,
                key,
                why: "out of range",
            }),
        }
    }

    fn str_list(&mut self, key: &'static str) -> Result<Option<Vec<String>>, Error> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    _ => Err(Error::BadField {
                        section: self.what,
                        key,
                        why: "expected a list of strings",
                    }),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            // LVM accepts a scalar where a one-element list is expected.
            Some(Value::Str(s)) => Ok(Some(vec![s.clone()])),
            Some(_) => Err(Error::BadField {
                section: self.what,
                key,
                why: "expected a list of strings",
            }),
        }
    }

    fn uuid(&mut self) -> Result<Uuid, Error> {
        Uuid::parse(&self.str_req("id")?)
    }

    /// Nodes not taken, anchored after the closest preceding taken key.
    fn extras(&self) -> Vec<Extra> {
        if self.used.iter().all(|&u| u) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut after = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if self.used[i] {
                after = Some(n.key.clone());
            } else {
                let text = String::from_utf8_lossy(&self.src[n.span.clone()]).into_owned();
                out.push(Extra {
                    after: after.clone(),
                    text,
                });
            }
        }
        out
    }
}

fn check_flags(words: &[String], allowed: &[&str], what: &'static str) -> Result<(), Error> {
    match words.iter().find(|w| !allowed.contains(&w.as_str())) {
        Some(w) => Err(Error::UnknownFlag {
            what,
            flag: w.clone(),
        }),
        None => Ok(()),
    }
}

impl Vg {
    /// Parses a metadata text as found in an mda (or a backup file).
    pub fn from_text(text: &[u8]) -> Result<Vg, Error> {
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        let text = &text[..end];
        let nodes = config::parse(text)?;
        let mut top = Fields::new(&nodes, text, "top level")?;
        match top.str_opt("contents")? {
            Some(c) if c == "Text Format Volume Group" => {}
            _ => return Err(Error::NotVgMetadata("missing or wrong 'contents'")),
        }
        if top.int_opt("version")? != Some(1) {
            return Err(Error::NotVgMetadata("missing or unsupported 'version'"));
        }
        let vg_node = nodes
            .iter()
            .find(|n| matches!(n.value, NodeValue::Section(_)))
            .ok_or(Error::NotVgMetadata("no VG section"))?;
        names::check_vg_name(&vg_node.key)?;
        Self::from_node(vg_node, text)
    }

    fn from_node(node: &Node, src: &[u8]) -> Result<Vg, Error> {
        let children = node.children().unwrap_or(&[]);
        let mut f = Fields::new(children, src, "VG")?;
        let id = f.uuid()?;
        let seqno = f.uint("seqno")?;
        let format = f.str_opt("format")?;
        let status = f.str_list("status")?.ok_or_else(|| f.missing("status"))?;
        check_flags(&status, VG_STATUS, "VG status")?;
        let flags = f.str_list("flags")?.unwrap_or_default();
        let tags = f.str_list("tags")?.unwrap_or_default();
        let system_id = f.str_opt("system_id")?;
        let lock_type = f.str_opt("lock_type")?;
        let lock_args = f.str_opt("lock_args")?;
        let extent_size: u32 = f.uint("extent_size")?;
        if extent_size == 0 {
            return Err(Error::BadField {
                section: "VG",
                key: "extent_size",
                why: "must not be zero",
            });
        }
        let max_lv = f.uint("max_lv")?;
        let max_pv = f.uint("max_pv")?;
        let allocation_policy = f.str_opt("allocation_policy")?;
        let profile = f.str_opt("profile")?;
        let metadata_copies = f.uint_opt("metadata_copies")?;
        let pv_section = f
            .section("physical_volumes")?
            .ok_or_else(|| f.missing("physical_volumes"))?;
        let mut pvs = Vec::new();
        for n in pv_section {
            let c = n.children().ok_or(Error::BadField {
                section: "physical_volumes",
                key: "pv",
                why: "expected a section",
            })?;
            pvs.push(Pv::from_nodes(&n.key, c, src)?);
        }
        let mut lvs = Vec::new();
        if let Some(lv_section) = f.section("logical_volumes")? {
            for n in lv_section {
                let c = n.children().ok_or(Error::BadField {
                    section: "logical_volumes",
                    key: "lv",
                    why: "expected a section",
                })?;
                lvs.push(Lv::from_nodes(&n.key, c, &src[n.span.clone()], src, &pvs)?);
            }
        }
        let mut historical = None;
        let mut historical_names = Vec::new();
        if let Some(h) = f.take("historical_logical_volumes") {
            let c = h.children().ok_or(Error::BadField {
                section: "VG",
                key: "historical_logical_volumes",
                why: "expected a section",
            })?;
            historical = Some(String::from_utf8_lossy(&src[h.span.clone()]).into_owned());
            historical_names = c.iter().map(|n| n.key.clone()).collect();
        }
        f.check_kinds(VG_KEYS)?;
        let vg = Vg {
            name: node.key.clone(),
            id,
            seqno,
            format,
            status,
            flags,
            tags,
            system_id,
            lock_type,
            lock_args,
            extent_size,
            max_lv,
            max_pv,
            allocation_policy,
            profile,
            metadata_copies,
            pvs,
            lvs,
            historical,
            historical_names,
            extras: f.extras(),
        };
        vg.validate()?;
        Ok(vg)
    }

    pub fn pv(&self, key: &str) -> Option<&Pv> {
        self.pvs.iter().find(|p| p.key == key)
    }

    pub fn pv_by_id(&self, id: &Uuid) -> Option<&Pv> {
        self.pvs.iter().find(|p| &p.id == id)
    }

    pub fn lv(&self, name: &str) -> Option<&Lv> {
        self.lvs.iter().find(|l| l.name == name)
    }

    pub fn lv_mut(&mut self, name: &str) -> Option<&mut Lv> {
        self.lvs.iter_mut().find(|l| l.name == name)
    }

    pub fn extent_count(&self) -> u64 {
        self.pvs.iter().map(|p| p.pe_count as u64).sum()
    }

    /// Visible LVs, as LVM counts them for `lv_count`.
    pub fn visible_lv_count(&self) -> usize {
        self.lvs.iter().filter(|l| l.visible()).count()
    }

    /// Checks the invariants LVM enforces on its next write.
    pub fn validate(&self) -> Result<(), Error> {
        let inv = |why: String| Error::Invalid(why);
        let mut keys = HashSet::new();
        let mut ids = HashSet::new();
        for pv in &self.pvs {
            if !keys.insert(pv.key.as_str()) || !ids.insert(pv.id) {
                return Err(inv(format!(
                    "duplicate physical volume {} ({})",
                    pv.key, pv.id
                )));
            }
        }
        let mut lv_names: HashSet<&str> =
            self.historical_names.iter().map(|s| s.as_str()).collect();
        let mut lv_ids = HashSet::new();
        for lv in &self.lvs {
            names::check_existing_lv_name(&lv.name)?;
            if !lv_names.insert(lv.name.as_str()) {
                return Err(inv(format!("duplicate logical volume name {}", lv.name)));
            }
            if !lv_ids.insert(lv.id) {
                return Err(inv(format!("duplicate logical volume id {}", lv.id)));
            }
            let mut next = 0u32;
            for seg in &lv.segments {
                if seg.start_extent != next || seg.extent_count == 0 {
                    return Err(inv(format!(
                        "segments of {} do not tile the LV at extent {}",
                        lv.name, next
                    )));
                }
                next = next
                    .checked_add(seg.extent_count)
                    .ok_or_else(|| inv(format!("{} is too large", lv.name)))?;
                if seg.is_striped()
                    && (seg.areas.is_empty() || seg.extent_count % seg.areas.len() as u32 != 0)
                {
                    return Err(inv(format!(
                        "striped segment of {} has a length not divisible by its stripes",
                        lv.name
                    )));
                }
            }
        }
        // Precise overlap check on the areas ferrolvm models exactly.
        let mut used: HashMap<&str, Vec<(u32, u32, &str)>> = HashMap::new();
        for lv in &self.lvs {
            for seg in &lv.segments {
                for a in &seg.areas {
                    if let Area::Pv { pv, pe } = a {
                        let p = self
                            .pv(pv)
                            .ok_or_else(|| inv(format!("{} refers to unknown PV {pv}", lv.name)))?;
                        let len = seg.area_len();
                        let end = pe.checked_add(len).filter(|&e| e <= p.pe_count);
                        let Some(end) = end else {
                            return Err(inv(format!(
                                "{} uses extents {pe}+{len} beyond the end of {pv}",
                                lv.name
                            )));
                        };
                        if seg.is_striped() {
                            used.entry(pv).or_default().push((*pe, end, &lv.name));
                        }
                    }
                }
            }
        }
        for (pv, mut ranges) in used {
            ranges.sort();
            for w in ranges.windows(2) {
                if w[1].0 < w[0].1 {
                    return Err(inv(format!(
                        "{} and {} overlap on {pv} at extent {}",
                        w[0].2, w[1].2, w[1].0
                    )));
                }
            }
        }
        Ok(())
    }

    /// Why ferrolvm must not write this VG, if it must not. `local_system_id`
    /// is this host's LVM system ID, if it has one.
    pub fn check_writable(&self, local_system_id: Option<&str>) -> Result<(), Error> {
        let refuse = |why: String| {
            Err(Error::NotWritable {
                vg: self.name.clone(),
                why,
            })
        };
        if let Some(lt) = &self.lock_type {
            return refuse(format!(
                "it is a shared VG (lock_type {lt}) that needs lvmlockd"
            ));
        }
        if let Some(sid) = self.system_id.as_deref().filter(|s| !s.is_empty()) {
            if Some(sid) != local_system_id {
                return refuse(format!("it belongs to system ID {sid}"));
            }
        }
        if self.status.iter().any(|s| s == "EXPORTED") {
            return refuse("it is exported".into());
        }
        if !self.status.iter().any(|s| s == "WRITE") {
            return refuse("it is read-only".into());
        }
        if self
            .status
            .iter()
            .any(|s| s == "PARTIAL" || s == "CLUSTERED")
        {
            return refuse("it is partial or clustered".into());
        }
        if let Some(pv) = self
            .pvs
            .iter()
            .find(|p| p.status.iter().chain(&p.flags).any(|s| s == "MISSING"))
        {
            return refuse(format!("physical volume {} is missing", pv.id));
        }
        Ok(())
    }
}

impl Pv {
    fn from_nodes(key: &str, nodes: &[Node], src: &[u8]) -> Result<Pv, Error> {
        let mut f = Fields::new(nodes, src, "PV")?;
        let id = f.uuid()?;
        let device = f.str_opt("device")?;
        let status = f.str_list("status")?.ok_or_else(|| f.missing("status"))?;
        check_flags(&status, PV_STATUS, "PV status")?;
        let flags = f.str_list("flags")?.unwrap_or_default();
        let tags = f.str_list("tags")?.unwrap_or_default();
        let dev_size = f.uint_opt("dev_size")?.unwrap_or(0);
        let pe_start = f.uint("pe_start")?;
        let pe_count = f.uint("pe_count")?;
        f.check_kinds(PV_KEYS)?;
        Ok(Pv {
            key: key.to_string(),
            id,
            device,
            status,
            flags,
            tags,
            dev_size,
            pe_start,
            pe_count,
            extras: f.extras(),
        })
    }
}

impl Lv {
    fn from_nodes(
        name: &str,
        nodes: &[Node],
        own_src: &[u8],
        src: &[u8],
        pvs: &[Pv],
    ) -> Result<Lv, Error> {
        let mut f = Fields::new(nodes, src, "LV")?;
        let id = f.uuid()?;
        let status = f.str_list("status")?.ok_or_else(|| f.missing("status"))?;
        let flags = f.str_list("flags")?.unwrap_or_default();
        let tags = f.str_list("tags")?.unwrap_or_default();
        let creation_time = f.uint_opt("creation_time")?;
        let creation_host = f.str_opt("creation_host")?;
        let allocation_policy = f.str_opt("allocation_policy")?;
        let read_ahead = f.int_opt("read_ahead")?;
        let major = f.int_opt("major")?;
        let minor = f.int_opt("minor")?;
        let segment_count: u32 = f.uint("segment_count")?;
        f.check_kinds(LV_KEYS)?;
        let mut seg_nodes: Vec<&Node> = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if matches!(n.value, NodeValue::Section(_)) {
                f.used[i] = true;
                seg_nodes.push(n);
            }
        }
        if seg_nodes.len() != segment_count as usize {
            return Err(Error::Invalid(format!(
                "{name}: segment_count is {segment_count} but {} segments follow",
                seg_nodes.len()
            )));
        }
        let mut segments = Vec::new();
        let mut simple = true;
        for n in &seg_nodes {
            let (seg, understood) = Segment::from_nodes(n.children().unwrap_or(&[]), src, pvs)?;
            simple &= understood;
            segments.push(seg);
        }
        segments.sort_by_key(|s| s.start_extent);
        let extras = f.extras();
        let managed = simple
            && extras.is_empty()
            && status
                .iter()
                .all(|s| MANAGED_LV_STATUS.contains(&s.as_str()))
            && seg_nodes
                .iter()
                .enumerate()
                .all(|(i, n)| n.key == format!("segment{}", i + 1));
        let verbatim = (!managed).then(|| String::from_utf8_lossy(own_src).into_owned());
        Ok(Lv {
            name: name.to_string(),
            id,
            status,
            flags,
            tags,
            creation_time,
            creation_host,
            allocation_policy,
            read_ahead,
            major,
            minor,
            segments,
            verbatim,
            extras,
        })
    }
}

impl Segment {
    /// Returns the segment and whether ferrolvm understands all of it.
    fn from_nodes(nodes: &[Node], src: &[u8], pvs: &[Pv]) -> Result<(Segment, bool), Error> {
        let mut f = Fields::new(nodes, src, "segment")?;
        let start_extent = f.uint("start_extent")?;
        let extent_count = f.uint("extent_count")?;
        let segtype = f.str_req("type")?;
        let tags = f.str_list("tags")?.unwrap_or_default();
        f.check_kinds(&["start_extent", "extent_count", "type", "tags"])?;
        let mut seg = Segment {
            start_extent,
            extent_count,
            segtype,
            stripe_size: None,
            areas: Vec::new(),
            tags,
            fields: Vec::new(),
            thin: None,
        };
        if seg.segtype == "striped" {
            let stripe_count: u32 = f.uint("stripe_count")?;
            seg.stripe_size = f.uint_opt("stripe_size")?;
            let stripes = f.value("stripes");
            f.check_kinds(&["stripe_count", "stripe_size", "stripes"])?;
            let Some(Value::Array(items)) = stripes else {
                return Err(f.missing("stripes"));
            };
            seg.areas = area_pairs(items).ok_or(Error::BadField {
                section: "segment",
                key: "stripes",
                why: "expected name, extent pairs",
            })?;
            if seg.areas.len() != stripe_count as usize || stripe_count == 0 {
                return Err(Error::BadField {
                    section: "segment",
                    key: "stripe_count",
                    why: "does not match the stripes list",
                });
            }
            if stripe_count > 1 && seg.stripe_size.is_none() {
                return Err(f.missing("stripe_size"));
            }
            let understood = f.extras().is_empty();
            return Ok((seg, understood));
        }
        // Other types: record scalar fields for reports, and every (PV, extent)
        // pair in any list so the allocator keeps off those extents.
        seg.thin = ThinSegment::from_nodes(&seg.segtype, nodes)?;
        for n in nodes {
            if let Some(v) = n.as_value() {
                match v {
                    Value::Array(items) => {
                        if let Some(pairs) = area_pairs(items) {
                            seg.areas.extend(pairs.into_iter().filter(|a| matches!(a, Area::Pv { pv, .. } if pvs.iter().any(|p| &p.key == pv))));
                        }
                    }
                    other => seg.fields.push((n.key.clone(), other.clone())),
                }
            }
        }
        let understood = match &seg.thin {
            Some(ThinSegment::Pool { .. }) => keys_within(nodes, THIN_POOL_KEYS, true),
            Some(ThinSegment::Thin {
                external_origin: None,
                ..
            }) => keys_within(nodes, THIN_KEYS, false),
            _ => false,
        };
        let understood = understood && seg.tags.is_empty();
        Ok((seg, understood))
    }
}

impl ThinSegment {
    fn from_nodes(segtype: &str, nodes: &[Node]) -> Result<Option<ThinSegment>, Error> {
        let base = segtype.split('+').next().unwrap_or(segtype);
        let bad = |key: &'static str, why: &'static str| Error::BadField {
            section: "thin segment",
            key,
            why,
        };
        let get = |key: &str| config::find(nodes, key).and_then(|n| n.as_value());
        let string = |key: &'static str| match get(key) {
            Some(Value::Str(s)) => Ok(Some(s.clone())),
            None => Ok(None),
            Some(_) => Err(bad(key, "expected a string")),
        };
        let int = |key: &'static str| match get(key) {
            Some(Value::Int(i)) => Ok(Some(*i)),
            None => Ok(None),
            Some(_) => Err(bad(key, "expected an integer")),
        };
        let req = |v: Option<String>, key: &'static str| {
            v.ok_or(Error::MissingField {
                section: "thin segment",
                key,
            })
        };
        let uint = |key: &'static str| -> Result<u64, Error> {
            int(key)?
                .ok_or(Error::MissingField {
                    section: "thin segment",
                    key,
                })
                .and_then(|i| u64::try_from(i).map_err(|_| bad(key, "out of range")))
        };
        match base {
            "thin-pool" => {
                let mut messages = Vec::new();
                for n in nodes.iter().filter(|n| n.key.starts_with("message")) {
                    let c = n.children().ok_or(bad("message", "expected a section"))?;
                    let msg = match (
                        config::find(c, "create").and_then(|n| n.as_value()),
                        config::find(c, "delete").and_then(|n| n.as_value()),
                    ) {
                        (Some(Value::Str(lv)), None) => ThinMessage::Create { lv: lv.clone() },
                        (None, Some(Value::Int(id))) => ThinMessage::Delete {
                            device_id: u32::try_from(*id)
                                .map_err(|_| bad("delete", "out of range"))?,
                        },
                        _ => return Err(bad("message", "expected one create or delete")),
                    };
                    messages.push(msg);
                }
                Ok(Some(ThinSegment::Pool {
                    metadata: req(string("metadata")?, "metadata")?,
                    pool: req(string("pool")?, "pool")?,
                    transaction_id: uint("transaction_id")?,
                    chunk_size: u32::try_from(uint("chunk_size")?)
                        .map_err(|_| bad("chunk_size", "out of range"))?,
                    discards: string("discards")?,
                    zero_new_blocks: int("zero_new_blocks")?.unwrap_or(0) != 0,
                    messages,
                }))
            }
            "thin" => Ok(Some(ThinSegment::Thin {
                thin_pool: req(string("thin_pool")?, "thin_pool")?,
                transaction_id: uint("transaction_id")?,
                device_id: u32::try_from(uint("device_id")?)
                    .ok()
                    .filter(|&d| d < (1 << 24))
                    .ok_or(bad("device_id", "must be below 2^24"))?,
                origin: string("origin")?,
                external_origin: string("external_origin")?,
            })),
            _ => Ok(None),
        }
    }
}

const THIN_POOL_KEYS: &[&str] = &[
    "start_extent",
    "extent_count",
    "type",
    "metadata",
    "pool",
    "transaction_id",
    "chunk_size",
    "discards",
    "zero_new_blocks",
];
const THIN_KEYS: &[&str] = &[
    "start_extent",
    "extent_count",
    "type",
    "thin_pool",
    "transaction_id",
    "device_id",
    "origin",
];

/// Whether a segment holds only `known` keys (and, for pools, `messageN` sections),
/// with a plain type (no `+FLAG` suffix).
fn keys_within(nodes: &[Node], known: &[&str], messages: bool) -> bool {
    nodes.iter().all(|n| match &n.value {
        NodeValue::Section(_) => messages && n.key.starts_with("message"),
        NodeValue::Value(Value::Str(t)) if n.key == "type" => !t.contains('+'),
        NodeValue::Value(_) => known.contains(&n.key.as_str()),
    })
}

fn area_pairs(items: &[Value]) -> Option<Vec<Area>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    items
        .chunks(2)
        .map(|c| match (&c[0], &c[1]) {
            (Value::Str(name), Value::Int(n)) => {
                let n = u32::try_from(*n).ok()?;
                Some(if name.starts_with("pv") {
                    Area::Pv {
                        pv: name.clone(),
                        pe: n,
                    }
                } else {
                    Area::Lv {
                        lv: name.clone(),
                        le: n,
                    }
                })
            }
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Writing

/// Writes key lines of one section and slots its extras in after the key
/// they originally followed.
struct Section<'a> {
    out: &'a mut String,
    extras: &'a [Extra],
    done: Vec<bool>,
}

impl<'a> Section<'a> {
    fn new(out: &'a mut String, extras: &'a [Extra]) -> Self {
        let mut s = Section {
            out,
            extras,
            done: vec![false; extras.len()],
        };
        s.flush(None);
        s
    }

    fn flush(&mut self, after: Option<&str>) {
        for (i, e) in self.extras.iter().enumerate() {
            if !self.done[i] && e.after.as_deref() == after {
                self.done[i] = true;
                self.out.push_str(&e.text);
                self.out.push('\n');
            }
        }
    }

    fn line(&mut self, key: &str, value: impl FnOnce(&mut String)) {
        self.out.push_str(key);
        self.out.push_str(" = ");
        value(self.out);
        self.out.push('\n');
        self.flush(Some(key));
    }

    fn str(&mut self, key: &str, v: &str) {
        self.line(key, |o| config::write_str(o, v));
    }

    fn int(&mut self, key: &str, v: impl ToString) {
        self.line(key, |o| o.push_str(&v.to_string()));
    }

    fn list(&mut self, key: &str, v: &[String]) {
        self.line(key, |o| write_list(o, v));
    }

    fn nl(&mut self) {
        self.out.push('\n');
    }

    /// Extras whose anchor key was not written this time.
    fn finish(mut self) {
        for (i, e) in self.extras.iter().enumerate() {
            if !self.done[i] {
                self.done[i] = true;
                self.out.push_str(&e.text);
                self.out.push('\n');
            }
        }
    }
}

fn write_list(o: &mut String, v: &[String]) {
    let items: Vec<Value> = v.iter().map(|s| Value::Str(s.clone())).collect();
    config::write_value(o, &Value::Array(items));
}

impl Vg {
    /// The VG block in LVM's raw format followed by `trailer`, NUL-terminated:
    /// the exact bytes that go into every mda.
    pub fn to_text(&self, trailer: &Trailer) -> Vec<u8> {
        let mut out = String::with_capacity(1024 + 600 * self.lvs.len());
        out.push_str(&self.name);
        out.push_str(" {\n");
        let mut s = Section::new(&mut out, &self.extras);
        s.str("id", &self.id.dashed());
        s.int("seqno", self.seqno);
        if let Some(f) = &self.format {
            s.str("format", f);
        }
        s.list("status", &self.status);
        s.list("flags", &self.flags);
        if !self.tags.is_empty() {
            s.list("tags", &self.tags);
        }
        if let Some(v) = &self.system_id {
            s.str("system_id", v);
        }
        if let Some(v) = &self.lock_type {
            s.str("lock_type", v);
        }
        if let Some(v) = &self.lock_args {
            s.str("lock_args", v);
        }
        s.int("extent_size", self.extent_size);
        s.int("max_lv", self.max_lv);
        s.int("max_pv", self.max_pv);
        if let Some(v) = &self.allocation_policy {
            s.nl();
            s.str("allocation_policy", v);
        }
        if let Some(v) = &self.profile {
            s.str("profile", v);
        }
        if let Some(v) = self.metadata_copies {
            s.int("metadata_copies", v);
        }
        s.nl();
        s.out.push_str("physical_volumes {\n");
        for pv in &self.pvs {
            s.out.push('\n');
            pv.write(s.out);
        }
        s.out.push_str("}\n");
        s.flush(Some("physical_volumes"));
        s.nl();
        if !self.lvs.is_empty() {
            s.out.push_str("logical_volumes {\n");
            for lv in &self.lvs {
                s.out.push('\n');
                lv.write(s.out);
            }
            s.out.push_str("}\n");
            s.flush(Some("logical_volumes"));
        }
        s.nl();
        if let Some(h) = &self.historical {
            s.out.push_str(h);
            s.out.push_str("\n\n");
            s.flush(Some("historical_logical_volumes"));
        }
        s.finish();
        out.push_str("}\n");
        let ctime = ctime(trailer.creation_time);
        out.push_str(&format!(
            "# Generated by {}: {ctime}\n\n",
            trailer.generator
        ));
        out.push_str("contents = \"Text Format Volume Group\"\nversion = 1\n\n");
        out.push_str("description = ");
        config::write_str(&mut out, &trailer.description);
        out.push_str("\n\ncreation_host = ");
        config::write_str(&mut out, &trailer.creation_host);
        out.push_str(&format!(
            "\t# {}\ncreation_time = {}\t# {ctime}\n\n",
            trailer.uname, trailer.creation_time
        ));
        let mut bytes = out.into_bytes();
        bytes.push(0);
        bytes
    }
}

impl Pv {
    fn write(&self, out: &mut String) {
        out.push_str(&self.key);
        out.push_str(" {\n");
        let mut s = Section::new(out, &self.extras);
        s.str("id", &self.id.dashed());
        if let Some(d) = &self.device {
            s.str("device", d);
        }
        s.nl();
        s.list("status", &self.status);
        s.list("flags", &self.flags);
        if !self.tags.is_empty() {
            s.list("tags", &self.tags);
        }
        s.int("dev_size", self.dev_size);
        s.int("pe_start", self.pe_start);
        s.int("pe_count", self.pe_count);
        s.finish();
        out.push_str("}\n");
    }
}

impl Lv {
    fn write(&self, out: &mut String) {
        if let Some(v) = &self.verbatim {
            out.push_str(v);
            out.push('\n');
            return;
        }
        out.push_str(&self.name);
        out.push_str(" {\n");
        let mut s = Section::new(out, &self.extras);
        s.str("id", &self.id.dashed());
        s.list("status", &self.status);
        s.list("flags", &self.flags);
        if !self.tags.is_empty() {
            s.list("tags", &self.tags);
        }
        // lvm2 2.03.16 writes creation_time before creation_host.
        if let (Some(t), Some(h)) = (self.creation_time, &self.creation_host) {
            s.int("creation_time", t);
            s.str("creation_host", h);
        }
        if let Some(v) = &self.allocation_policy {
            s.str("allocation_policy", v);
        }
        if let Some(v) = self.read_ahead {
            s.int("read_ahead", v);
        }
        if let Some(v) = self.major {
            s.int("major", v);
        }
        if let Some(v) = self.minor {
            s.int("minor", v);
        }
        s.int("segment_count", self.segments.len());
        s.nl();
        for (i, seg) in self.segments.iter().enumerate() {
            match &seg.thin {
                Some(t) => seg.write_thin(s.out, i + 1, t),
                None => seg.write_striped(s.out, i + 1),
            }
        }
        s.finish();
        out.push_str("}\n");
    }
}

impl Segment {
    /// thin-pool and thin segments, in lvm2 2.03's raw layout.
    fn write_thin(&self, out: &mut String, index: usize, t: &ThinSegment) {
        out.push_str(&format!(
            "segment{index} {{\nstart_extent = {}\nextent_count = {}\n\n",
            self.start_extent, self.extent_count
        ));
        let q = |o: &mut String, k: &str, v: &str| {
            o.push_str(k);
            o.push_str(" = ");
            config::write_str(o, v);
            o.push('\n');
        };
        match t {
            ThinSegment::Pool {
                metadata,
                pool,
                transaction_id,
                chunk_size,
                discards,
                zero_new_blocks,
                messages,
            } => {
                q(out, "type", "thin-pool");
                q(out, "metadata", metadata);
                q(out, "pool", pool);
                out.push_str(&format!(
                    "transaction_id = {transaction_id}\nchunk_size = {chunk_size}\n"
                ));
                if let Some(d) = discards {
                    q(out, "discards", d);
                }
                if *zero_new_blocks {
                    out.push_str("zero_new_blocks = 1\n");
                }
                if !messages.is_empty() {
                    out.push('\n');
                }
                for (i, m) in messages.iter().enumerate() {
                    out.push_str(&format!("message{} {{\n", i + 1));
                    match m {
                        ThinMessage::Create { lv } => q(out, "create", lv),
                        ThinMessage::Delete { device_id } => {
                            out.push_str(&format!("delete = {device_id}\n"))
                        }
                    }
                    out.push_str("}\n");
                }
            }
            ThinSegment::Thin {
                thin_pool,
                transaction_id,
                device_id,
                origin,
                ..
            } => {
                q(out, "type", "thin");
                q(out, "thin_pool", thin_pool);
                out.push_str(&format!(
                    "transaction_id = {transaction_id}\ndevice_id = {device_id}\n"
                ));
                if let Some(o) = origin {
                    q(out, "origin", o);
                }
            }
        }
        out.push_str("}\n");
    }

    fn write_striped(&self, out: &mut String, index: usize) {
        out.push_str(&format!(
            "segment{index} {{\nstart_extent = {}\nextent_count = {}\n\ntype = \"striped\"\n",
            self.start_extent, self.extent_count
        ));
        if !self.tags.is_empty() {
            out.push_str("tags = ");
            write_list(out, &self.tags);
            out.push('\n');
        }
        out.push_str(&format!("stripe_count = {}\n", self.areas.len()));
        if let Some(ss) = self.stripe_size.filter(|_| self.areas.len() > 1) {
            out.push_str(&format!("stripe_size = {ss}\n"));
        }
        out.push_str("\nstripes = [\n");
        for (i, a) in self.areas.iter().enumerate() {
            let (name, n) = match a {
                Area::Pv { pv, pe } => (pv, pe),
                Area::Lv { lv, le } => (lv, le),
            };
            config::write_str(out, name);
            out.push_str(&format!(
                ", {n}{}\n",
                if i + 1 < self.areas.len() { "," } else { "" }
            ));
        }
        out.push_str("]\n}\n");
    }
}

/// `ctime(3)`-style time in UTC without the newline: `Wed Nov 25 01:50:42 2026`.
pub fn ctime(t: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        y
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_libc_format() {
        assert_eq!(ctime(1795571442), "Wed Nov 25 01:50:42 2026");
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(951_782_400), "Tue Feb 29 00:00:00 2000");
    }
}
