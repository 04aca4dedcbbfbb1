//! Validation of VG, LV and tag names, as LVM enforces them.

use crate::Error;

/// Longest VG or LV name (LVM's NAME_LEN 128 includes the NUL).
pub const MAX_NAME_LEN: usize = 127;

const RESERVED_LV_PREFIXES: &[&str] = &["snapshot", "pvmove"];
const RESERVED_LV_SUBSTRINGS: &[&str] = &[
    "_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_wcorig", "_mimage", "_mlog", "_rimage",
    "_rmeta", "_tdata", "_tmeta", "_vdata", "_imeta", "_iorig", "_pmspare", "_vorigin",
];

fn check_common(kind: &'static str, name: &str) -> Result<(), Error> {
    let bad = |why: &'static str| Error::BadName {
        kind,
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("longer than 127 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are reserved"));
    }
    if name.starts_with('-') {
        return Err(bad("must not start with '-'"));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"+_.-".contains(&c))
    {
        return Err(bad("only [A-Za-z0-9+_.-] are allowed"));
    }
    Ok(())
}

/// A name a user may give a new VG.
pub fn check_vg_name(name: &str) -> Result<(), Error> {
    check_common("VG", name)
}

/// A name a user may give a new LV (LVM's internal component names are refused).
pub fn check_lv_name(name: &str) -> Result<(), Error> {
    check_common("LV", name)?;
    let bad = |why: &'static str| Error::BadName {
        kind: "LV",
        name: name.to_string(),
        why,
    };
    if RESERVED_LV_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(bad(
            "names starting with 'snapshot' or 'pvmove' are reserved",
        ));
    }
    if RESERVED_LV_SUBSTRINGS.iter().any(|s| name.contains(s)) {
        return Err(bad("contains a suffix reserved for LVM's internal volumes"));
    }
    Ok(())
}

/// A name read from metadata: LVM's own internal names are legal here.
pub fn check_existing_lv_name(name: &str) -> Result<(), Error> {
    check_common("LV", name)
}

pub fn check_tag(tag: &str) -> Result<(), Error> {
    let ok = !tag.is_empty()
        && tag.len() <= 1024
        && tag
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._+/=!:&#-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName {
            kind: "tag",
            name: tag.to_string(),
            why: "only [A-Za-z0-9._+/=!:&#-] are allowed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["vg0", "my-vg.x", "lv+1", "a_b", "x.y-z+w"] {
            check_vg_name(ok).unwrap();
            check_lv_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "-x", "a b", "a/b", &"x".repeat(128)] {
            assert!(check_vg_name(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "snapshot1",
            "pvmove0",
            "pool_tmeta",
            "x_rimage_0",
            "lvol0_pmspare",
        ] {
            assert!(check_lv_name(bad).is_err(), "{bad:?}");
            check_existing_lv_name(bad).unwrap();
        }
        check_tag("a/b=c").unwrap();
        assert!(check_tag("a b").is_err());
    }
}
