//! Which block devices ferrolvm reads metadata from. ferrolvm runs next to
//! tenants who own the contents of their volumes, so it never reads metadata
//! from a device-mapper device that is an LV (dm uuid `LVM-…`: lvm2's
//! default `devices/scan_lvs = 0`, kept here whatever lvm.conf says), and it
//! honours lvm.conf's `devices/global_filter` and `devices/filter` exactly as
//! lvm2 matches them.

use std::path::{Path, PathBuf};

use regex::Regex;

/// One `a|regex|` (accept) or `r|regex|` (reject) pattern.
#[derive(Debug, Clone)]
struct Rule {
    accept: bool,
    regex: Regex,
}

/// lvm.conf's `global_filter` and `filter`: a device must pass both.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    global: Vec<Rule>,
    filter: Vec<Rule>,
}

/// Parses one lvm2 filter pattern: `a` or `r`, a delimiter, a regular
/// expression, the same delimiter.
fn rule(pattern: &str) -> Result<Rule, String> {
    let bad = |why: &str| format!("lvm.conf filter pattern {pattern:?}: {why}");
    let mut chars = pattern.chars();
    let accept = match chars.next() {
        Some('a') => true,
        Some('r') => false,
        _ => return Err(bad("must start with a (accept) or r (reject)")),
    };
    let delim = chars.next().ok_or_else(|| bad("has no delimiter"))?;
    let rest = chars.as_str();
    let end = rest
        .rfind(delim)
        .ok_or_else(|| bad("is not closed by its delimiter"))?;
    if !rest[end + delim.len_utf8()..].is_empty() {
        return Err(bad("has text after its closing delimiter"));
    }
    let regex = Regex::new(&rest[..end]).map_err(|e| bad(&e.to_string()))?;
    Ok(Rule { accept, regex })
}

/// lvm2's rule: for each name of the device in turn, the first pattern that
/// matches it decides; an accepting match accepts the device at once, a
/// rejecting one marks it; a device no pattern matches is accepted.
fn passes(rules: &[Rule], names: &[String]) -> bool {
    let mut rejected = false;
    for name in names {
        if let Some(r) = rules.iter().find(|r| r.regex.is_match(name)) {
            if r.accept {
                return true;
            }
            rejected = true;
        }
    }
    !rejected
}

impl DeviceFilter {
    /// From the pattern lists of `devices/global_filter` and `devices/filter`.
    pub fn new(global: &[String], filter: &[String]) -> Result<DeviceFilter, String> {
        Ok(DeviceFilter {
            global: global.iter().map(|p| rule(p)).collect::<Result<_, _>>()?,
            filter: filter.iter().map(|p| rule(p)).collect::<Result<_, _>>()?,
        })
    }

    /// Whether no pattern is configured (lvm.conf's default): every device passes.
    pub fn is_empty(&self) -> bool {
        self.global.is_empty() && self.filter.is_empty()
    }

    /// Whether a device known by `names` (its path and every alias) passes.
    pub fn accepts(&self, names: &[String]) -> bool {
        passes(&self.global, names) && passes(&self.filter, names)
    }
}

/// The device-mapper uuid of a block device, if it is a dm device.
fn dm_uuid_of(dev: &Path) -> Option<String> {
    let real = std::fs::canonicalize(dev).ok()?;
    let name = real.strip_prefix("/dev").ok()?.to_str()?;
    if !name.starts_with("dm-") {
        return None;
    }
    std::fs::read_to_string(Path::new("/sys/class/block").join(name).join("dm/uuid"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether `dev` is an LV (or a layer of one): a device whose contents a
/// tenant may control, never a place to read metadata from.
pub fn is_lv(dev: &Path) -> bool {
    dm_uuid_of(dev).is_some_and(|u| u.starts_with("LVM-"))
}

/// Every name of a block device: its path, its kernel name under /dev,
/// and the symlinks to it under /dev/disk/*, /dev/mapper and /dev/<vg>/.
pub fn names_of(dev: &Path) -> Vec<String> {
    let mut names = vec![dev.display().to_string()];
    let Ok(real) = std::fs::canonicalize(dev) else {
        return names;
    };
    let mut push = |p: PathBuf| {
        let s = p.display().to_string();
        if !names.contains(&s) {
            names.push(s);
        }
    };
    push(real.clone());
    let mut dirs: Vec<PathBuf> = vec!["/dev/mapper".into()];
    if let Ok(rd) = std::fs::read_dir("/dev/disk") {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    if let Ok(rd) = std::fs::read_dir("/dev") {
        dirs.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink()),
        );
    }
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_symlink() && std::fs::canonicalize(&p).is_ok_and(|c| c == real) {
                push(p);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patterns_parse_like_lvm2() {
        assert!(rule("a|^/dev/sd.*|").unwrap().accept);
        assert!(!rule("r/.*/").unwrap().accept);
        assert!(rule("x|a|").is_err(), "neither a nor r");
        assert!(rule("a|unclosed").is_err());
        assert!(rule("a|x|y").is_err(), "text after the delimiter");
        assert!(rule("a|(|").is_err(), "a bad regular expression");
    }

    #[test]
    fn first_matching_pattern_decides() {
        let f = DeviceFilter::new(&[], &names(&["a|^/dev/loop1$|", "r|.*|"])).unwrap();
        assert!(f.accepts(&names(&["/dev/loop1"])));
        assert!(!f.accepts(&names(&["/dev/loop2"])));
        let f = DeviceFilter::new(&[], &names(&["r|loop|", "a|.*|"])).unwrap();
        assert!(!f.accepts(&names(&["/dev/loop1"])));
        assert!(f.accepts(&names(&["/dev/sda"])));
    }

    #[test]
    fn an_accepted_alias_accepts_the_device() {
        let f = DeviceFilter::new(&[], &names(&["a|by-id/keep|", "r|.*|"])).unwrap();
        assert!(f.accepts(&names(&["/dev/sdb", "/dev/disk/by-id/keep-me"])));
        assert!(!f.accepts(&names(&["/dev/sdb", "/dev/disk/by-id/other"])));
    }

    #[test]
    fn unmatched_devices_pass_and_both_lists_apply() {
        assert!(DeviceFilter::default().is_empty());
        assert!(DeviceFilter::default().accepts(&names(&["/dev/anything"])));
        let f = DeviceFilter::new(&names(&["r|loop7|"]), &names(&["a|loop|"])).unwrap();
        assert!(!f.is_empty());
        assert!(f.accepts(&names(&["/dev/loop1"])));
        assert!(!f.accepts(&names(&["/dev/loop7"])), "global_filter rejects");
    }

    #[test]
    fn plain_files_are_not_lvs() {
        assert!(!is_lv(Path::new("/dev/null")));
        assert!(!is_lv(Path::new("/nonexistent")));
    }
}
