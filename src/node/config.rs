//! Device classes, from a file in TopoLVM's `lvmd.yaml` shape so operators
//! can reuse theirs, and the capacity each class offers.

use std::path::Path;

use ferrolvm_metadata::alloc::FreeMap;
use ferrolvm_metadata::{ThinSegment, Vg};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClassType {
    #[default]
    Thick,
    Thin,
}

/// What DeleteVolume does to a thick volume's extents before anyone else
/// can get them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Wipe {
    /// BLKZEROOUT over the whole volume (the default).
    #[default]
    Zero,
    /// BLKDISCARD, for devices the operator knows read zeros after a discard.
    Discard,
    /// Nothing: the next block-mode tenant can read the old data (lvm2's and
    /// TopoLVM's behaviour).
    None,
}

impl Wipe {
    /// The word kept in the wiping LV's tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Wipe::Zero => "zero",
            Wipe::Discard => "discard",
            Wipe::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ThinPoolConfig {
    pub name: String,
    #[serde(default = "one")]
    pub overprovision_ratio: f64,
}

fn one() -> f64 {
    1.0
}

/// A device class. Unknown keys are refused: a typo such as `spare_gb`
/// must not silently mean TopoLVM's default of 10 GiB.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceClass {
    pub name: String,
    pub volume_group: String,
    #[serde(default)]
    pub default: bool,
    /// GiB kept free on thick classes (TopoLVM's default: 10).
    pub spare_gb: Option<u64>,
    pub stripe: Option<u32>,
    pub stripe_size: Option<String>,
    /// Raw lvcreate arguments: refused, ferrolvm runs no lvcreate.
    pub lvcreate_options: Option<Vec<String>>,
    #[serde(default, rename = "type")]
    pub class_type: ClassType,
    pub thin_pool: Option<ThinPoolConfig>,
    /// Thick classes: how freed extents are made unreadable (default zero).
    /// Thin pools zero new blocks themselves.
    pub wipe: Option<Wipe>,
}

/// The file; keys of lvmd.yaml that only concern lvmd (socket-name,
/// lvcreate-option-classes, lvm-command-prefix) are accepted and ignored,
/// any other unknown key is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeConfig {
    pub device_classes: Vec<DeviceClass>,
    #[serde(default, rename = "socket-name")]
    _socket_name: Option<serde_norway::Value>,
    #[serde(default, rename = "lvcreate-option-classes")]
    _lvcreate_option_classes: Option<serde_norway::Value>,
    #[serde(default, rename = "lvm-command-prefix")]
    _lvm_command_prefix: Option<serde_norway::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: serde_norway::Error,
    },
    #[error("device class {class:?}: {why}")]
    Invalid { class: String, why: String },
    #[error("{0}")]
    Whole(String),
}

const GIB: u64 = 1 << 30;

fn qualified_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: p, source },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let c: NodeConfig = serde_norway::from_str(text).map_err(|source| ConfigError::Parse {
            path: "config".into(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.device_classes.is_empty() {
            return Err(ConfigError::Whole("no device-classes configured".into()));
        }
        if self.device_classes.iter().filter(|d| d.default).count() > 1 {
            return Err(ConfigError::Whole(
                "more than one device class is marked default".into(),
            ));
        }
        let mut seen_names = std::collections::HashSet::new();
        let mut seen_targets = std::collections::HashSet::new();
        for d in &self.device_classes {
            let bad = |why: &str| ConfigError::Invalid {
                class: d.name.clone(),
                why: why.into(),
            };
            if !qualified_name(&d.name) {
                return Err(bad(
                    "the name must be a qualified name of at most 63 characters",
                ));
            }
            if !seen_names.insert(d.name.as_str()) {
                return Err(bad("the name is used twice"));
            }
            ferrolvm_metadata::names::check_vg_name(&d.volume_group)
                .map_err(|e| bad(&e.to_string()))?;
            if d.lvcreate_options.as_ref().is_some_and(|o| !o.is_empty()) {
                return Err(bad("lvcreate-options are not supported: ferrolvm runs no lvcreate; use stripe/stripe-size or type"));
            }
            d.stripe_sectors().map_err(|e| bad(&e))?;
            if d.class_type == ClassType::Thin && d.wipe.is_some_and(|w| w != Wipe::None) {
                return Err(bad(
                    "wipe applies to thick classes: a thin pool zeroes new blocks itself",
                ));
            }
            let target = match (d.class_type, &d.thin_pool) {
                (ClassType::Thin, Some(p)) => {
                    if p.overprovision_ratio.is_nan() || p.overprovision_ratio < 1.0 {
                        return Err(bad("thin-pool.overprovision-ratio must be at least 1.0"));
                    }
                    format!("{}/{}", d.volume_group, p.name)
                }
                (ClassType::Thin, None) => return Err(bad("type thin needs a thin-pool section")),
                (ClassType::Thick, _) => d.volume_group.clone(),
            };
            if !seen_targets.insert(target.clone()) {
                return Err(bad(&format!(
                    "{target} is already used by another device class"
                )));
            }
        }
        Ok(())
    }

    /// The class a request names, or the default class.
    pub fn class(&self, name: Option<&str>) -> Option<&DeviceClass> {
        match name.filter(|n| !n.is_empty()) {
            Some(n) => self.device_classes.iter().find(|d| d.name == n),
            None => self
                .device_classes
                .iter()
                .find(|d| d.default)
                .or_else(|| (self.device_classes.len() == 1).then(|| &self.device_classes[0])),
        }
    }
}

impl DeviceClass {
    /// How DeleteVolume wipes this class's freed extents.
    pub fn wipe(&self) -> Wipe {
        match self.class_type {
            ClassType::Thin => Wipe::None,
            ClassType::Thick => self.wipe.unwrap_or_default(),
        }
    }

    /// Stripes and stripe size (sectors) of this class's volumes: lvm2's
    /// default of 64 KiB when striped without a size.
    pub fn stripe_geometry(&self) -> (u32, Option<u32>) {
        let stripes = self.stripe.unwrap_or(1).max(1);
        // Validated when the config was loaded.
        let size = self.stripe_sectors().ok().flatten();
        (stripes, size.or((stripes > 1).then_some(128)))
    }

    /// `stripe-size` in 512-byte sectors, parsed as lvm2 parses `-I` (lvm's
    /// size syntax, default unit KiB): a power of two from 4 KiB to 4 GiB.
    /// None when the class does not set it.
    pub fn stripe_sectors(&self) -> Result<Option<u32>, String> {
        let Some(text) = &self.stripe_size else {
            return Ok(None);
        };
        let bad = || {
            format!("stripe-size {text:?} must be a power of two from 4k to 4g (lvm's size syntax, default unit k)")
        };
        let (sign, bytes) = crate::lvm::size::parse_size(text, 'k').map_err(|_| bad())?;
        if sign != crate::lvm::size::Sign::Abs
            || !bytes.is_power_of_two()
            || !(4096..=(4u64 << 30)).contains(&bytes)
        {
            return Err(bad());
        }
        Ok(Some((bytes / 512) as u32))
    }

    /// Bytes a new volume of this class can get on `vg` (the class's VG):
    /// thick, the free space less the spare; thin, the pool size times the
    /// overprovision ratio less the virtual size of its thin LVs.
    pub fn capacity(&self, vg: &Vg) -> u64 {
        let es = vg.extent_size as u64 * 512;
        match (&self.class_type, &self.thin_pool) {
            (ClassType::Thin, Some(p)) => {
                let Some(pool) = vg.lv(&p.name).filter(|l| {
                    matches!(
                        l.segments.first().and_then(|s| s.thin.as_ref()),
                        Some(ThinSegment::Pool { .. })
                    )
                }) else {
                    return 0;
                };
                let limit =
                    (pool.extent_count() as f64 * es as f64 * p.overprovision_ratio).floor() as u64;
                let used: u64 = ferrolvm_metadata::ops::thin_lvs(vg, &p.name)
                    .iter()
                    .map(|(l, _)| l.extent_count() as u64 * es)
                    .sum();
                limit.saturating_sub(used)
            }
            _ => (FreeMap::of(vg).total() * es).saturating_sub(self.spare_gb.unwrap_or(10) * GIB),
        }
    }

    /// The largest single volume this class can make on `vg` now. Thin: the
    /// room under the overprovision limit (capacity). Thick: the largest
    /// extent count, within the capacity, that the allocator itself places
    /// with the class's stripes — a striped volume needs room on that many
    /// PVs at once, so this can be far below the free total.
    pub fn max_volume(&self, vg: &Vg) -> u64 {
        let room = self.capacity(vg);
        if self.class_type == ClassType::Thin {
            return room;
        }
        let es = vg.extent_size as u64 * 512;
        let (stripes, stripe_size) = self.stripe_geometry();
        let fits = |extents: u32| {
            extents > 0
                && ferrolvm_metadata::alloc::allocate(
                    vg,
                    &ferrolvm_metadata::alloc::Request {
                        extents,
                        stripes,
                        stripe_size,
                        pvs: None,
                    },
                    0,
                    None,
                )
                .is_ok()
        };
        // Whole stripe rows, at most what capacity allows; then the largest
        // row count that fits, by bisection (placement is monotone in size).
        let rows = u32::try_from(room / es / stripes as u64).unwrap_or(u32::MAX / stripes);
        let (mut lo, mut hi) = (0u32, rows);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid * stripes) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo as u64 * stripes as u64 * es
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LVMD: &str = r#"
socket-name: /run/topolvm/lvmd.sock
device-classes:
  - name: ssd
    volume-group: tvg
    default: true
    spare-gb: 0
  - name: thin
    volume-group: tvg
    type: thin
    thin-pool:
      name: pool0
      overprovision-ratio: 5.0
  - name: striped
    volume-group: other
    stripe: 2
    stripe-size: "64k"
"#;

    #[test]
    fn topolvm_lvmd_yaml_is_accepted() {
        let c = NodeConfig::parse(LVMD).unwrap();
        assert_eq!(c.device_classes.len(), 3);
        assert_eq!(c.class(None).unwrap().name, "ssd");
        assert_eq!(c.class(Some("thin")).unwrap().class_type, ClassType::Thin);
        assert_eq!(c.class(Some("striped")).unwrap().stripe, Some(2));
        assert!(c.class(Some("nope")).is_none());
        assert_eq!(
            c.class(Some("striped")).unwrap().stripe_sectors(),
            Ok(Some(128))
        );
        assert_eq!(c.class(Some("ssd")).unwrap().stripe_sectors(), Ok(None));
        let lvmd_only = "socket-name: /run/lvmd.sock\nlvm-command-prefix: []\nlvcreate-option-classes: []\ndevice-classes:\n  - {name: a, volume-group: v}";
        NodeConfig::parse(lvmd_only).expect("lvmd-only keys are accepted and ignored");
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let cases = [
            ("device-classes: []", "no device-classes"),
            ("device-classes:\n  - {name: a, volume-group: v, default: true}\n  - {name: b, volume-group: w, default: true}", "more than one"),
            ("device-classes:\n  - {name: a, volume-group: v}\n  - {name: b, volume-group: v}", "already used"),
            ("device-classes:\n  - {name: a, volume-group: v, type: thin}", "needs a thin-pool"),
            ("device-classes:\n  - {name: a, volume-group: v, type: thin, thin-pool: {name: p, overprovision-ratio: 0.5}}", "at least 1.0"),
            ("device-classes:\n  - {name: a, volume-group: v, lvcreate-options: [\"--type=raid1\"]}", "not supported"),
            ("device-classes:\n  - {name: -a, volume-group: v}", "qualified name"),
            ("device-classes:\n  - {name: a, volume-group: v, spare_gb: 0}", "unknown field `spare_gb`"),
            ("device-classes:\n  - {name: a, volume-group: v, type: thin, thin-pool: {name: p, overprovision_ratio: 2}}", "unknown field"),
            ("device-class:\n  - {name: a, volume-group: v}", "unknown field `device-class`"),
            ("device-classes:\n  - {name: a, volume-group: v, stripe-size: 3k}", "power of two"),
            ("device-classes:\n  - {name: a, volume-group: v, stripe-size: 64q}", "power of two"),
            ("device-classes:\n  - {name: a, volume-group: v, stripe-size: \"+64k\"}", "power of two"),
            ("device-classes:\n  - {name: a, volume-group: v, stripe-size: 1k}", "power of two"),
            ("device-classes:\n  - {name: a, volume-group: v, wipe: shred}", "unknown variant"),
            ("device-classes:\n  - {name: a, volume-group: v, type: thin, wipe: zero, thin-pool: {name: p}}", "wipe applies to thick"),
        ];
        for (text, want) in cases {
            let err = NodeConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    /// Capacity on lvm2's own thin VG (seqno 10 of the thin fixture: a 64 MiB
    /// pool holding a 100 MiB thin LV, 127 extents of 4 MiB).
    #[test]
    fn capacity_rules() {
        let text = include_bytes!("../../metadata/tests/fixtures/lvm2-thin/seqno10.txt");
        let vg = Vg::from_text(text).unwrap();
        let c = NodeConfig::parse(LVMD).unwrap();
        let free = FreeMap::of(&vg).total() * 4 * 1024 * 1024;
        assert_eq!(free, ((127 - 1 - 16 - 1) * 4) << 20);
        assert_eq!(c.class(Some("ssd")).unwrap().capacity(&vg), free);
        // 5 x 64 MiB - 100 MiB.
        assert_eq!(
            c.class(Some("thin")).unwrap().capacity(&vg),
            (5 * 64 - 100) << 20
        );
        let spare = NodeConfig::parse("device-classes:\n  - {name: a, volume-group: tvg}").unwrap();
        assert_eq!(
            spare.class(None).unwrap().capacity(&vg),
            0,
            "the default 10 GiB spare exceeds the VG"
        );
    }

    /// The largest volume is one the allocator really places, and one stripe
    /// row more is not; linear volumes can take all the room there is.
    #[test]
    fn max_volume_is_what_the_allocator_places() {
        let text = include_bytes!("../../metadata/tests/fixtures/lvm2-striped-multiseg.txt");
        let vg = Vg::from_text(text).unwrap();
        let es = vg.extent_size as u64 * 512;
        let place = |extents: u64, stripes: u32| {
            ferrolvm_metadata::alloc::allocate(
                &vg,
                &ferrolvm_metadata::alloc::Request {
                    extents: extents as u32,
                    stripes,
                    stripe_size: (stripes > 1).then_some(128),
                    pvs: None,
                },
                0,
                None,
            )
            .is_ok()
        };
        for stripes in 1..=3u32 {
            let c = NodeConfig::parse(&format!(
                "device-classes:\n  - {{name: s, volume-group: vg, spare-gb: 0, stripe: {stripes}}}"
            ))
            .unwrap();
            let class = c.class(None).unwrap();
            let max = class.max_volume(&vg);
            assert!(max <= class.capacity(&vg));
            assert_eq!(max % (es * stripes as u64), 0, "whole stripe rows");
            let rows = max / es / stripes as u64;
            assert!(
                rows == 0 || place(rows * stripes as u64, stripes),
                "{stripes}: {max} does not fit"
            );
            assert!(
                !place((rows + 1) * stripes as u64, stripes),
                "{stripes}: a larger one fits"
            );
            if stripes == 1 {
                assert_eq!(max, class.capacity(&vg));
            }
        }
    }
}
