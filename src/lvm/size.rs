//! lvm's size syntax, exactly: `[+-]N[.N][unit]` with binary units
//! (`b s k m g t p e`, either case), and `-l` extents (`N`, `N%VG`,
//! `N%FREE`). Arithmetic is on integers: a fraction is rounded up to the
//! next byte, and a size past `u64` is an error, never a rounded float.

use ferrolvm_metadata::Vg;

use super::{LvmError, Result};

/// A parsed `-L` / `-l` argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Bytes(u64),
    Extents(u64),
    PercentVg(u64),
    PercentFree(u64),
}

/// A leading `+` or `-`: relative to the current size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sign {
    Abs,
    Plus,
    Minus,
}

fn usage(msg: impl Into<String>) -> LvmError {
    LvmError::Refused(msg.into())
}

fn unit_bytes(unit: char) -> Option<u64> {
    Some(match unit.to_ascii_lowercase() {
        'b' => 1,
        's' => 512,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        't' => 1 << 40,
        'p' => 1 << 50,
        'e' => 1 << 60,
        _ => return None,
    })
}

/// `[+-]N[.N][unit]` in bytes; `default_unit` applies when none is given.
pub fn parse_size(s: &str, default_unit: char) -> Result<(Sign, u64)> {
    let invalid = || usage(format!("invalid size {s:?}"));
    let (sign, body) = split_sign(s);
    let idx = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, unit) = body.split_at(idx);
    let mut units = unit.chars();
    let unit = units.next().unwrap_or(default_unit);
    if units.next().is_some() {
        return Err(invalid());
    }
    let mult = unit_bytes(unit).ok_or_else(|| usage(format!("invalid size unit in {s:?}")))?;
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(invalid());
    }
    let out_of_range = || usage(format!("size {s:?} is out of range"));
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| out_of_range())?
    };
    let mut bytes = whole.checked_mul(mult as u128).ok_or_else(out_of_range)?;
    // Trailing zeros say nothing; 18 digits keep `fraction × unit` exact in a u128.
    let frac = frac.trim_end_matches('0');
    if frac.len() > 18 {
        return Err(usage(format!("size {s:?} has more than 18 decimal places")));
    }
    if !frac.is_empty() {
        let f: u128 = frac.parse().map_err(|_| invalid())?;
        let part = (f * mult as u128).div_ceil(10u128.pow(frac.len() as u32));
        bytes = bytes.checked_add(part).ok_or_else(out_of_range)?;
    }
    let bytes = u64::try_from(bytes).map_err(|_| out_of_range())?;
    Ok((sign, bytes))
}

fn split_sign(s: &str) -> (Sign, &str) {
    if let Some(r) = s.strip_prefix('+') {
        (Sign::Plus, r)
    } else if let Some(r) = s.strip_prefix('-') {
        (Sign::Minus, r)
    } else {
        (Sign::Abs, s)
    }
}

/// `-L SIZE` (default unit MiB) or `-l EXTENTS[%VG|%FREE]`, exactly one.
pub fn parse_amount(size: Option<&str>, extents: Option<&str>) -> Result<(Sign, Amount)> {
    match (size, extents) {
        (Some(s), None) => parse_size(s, 'm').map(|(sg, b)| (sg, Amount::Bytes(b))),
        (None, Some(e)) => {
            let (sign, body) = split_sign(e);
            let (num, pct) = match body.split_once('%') {
                Some((n, p)) => (n, Some(p.to_ascii_uppercase())),
                None => (body, None),
            };
            let n: u64 = num
                .parse()
                .map_err(|_| usage(format!("invalid extents {e:?}")))?;
            let a = match pct.as_deref() {
                None => Amount::Extents(n),
                Some("VG") => Amount::PercentVg(n),
                Some("FREE") => Amount::PercentFree(n),
                Some(p) => return Err(usage(format!("unsupported %{p} in -l"))),
            };
            Ok((sign, a))
        }
        (Some(_), Some(_)) => Err(usage("please specify either -L or -l, not both")),
        (None, None) => Err(usage("please specify a size with -L or -l")),
    }
}

/// An amount in whole extents of `vg`, rounded up for bytes.
pub fn to_extents(vg: &Vg, a: Amount) -> u64 {
    let es = vg.extent_size as u64 * 512;
    match a {
        Amount::Bytes(b) => b.div_ceil(es),
        Amount::Extents(n) => n,
        Amount::PercentVg(p) => vg.extent_count() * p / 100,
        Amount::PercentFree(p) => ferrolvm_metadata::alloc::FreeMap::of(vg).total() * p / 100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M", 'm').unwrap(), (Sign::Abs, 8 << 20));
        assert_eq!(parse_size("+1.5g", 'm').unwrap(), (Sign::Plus, 3 << 29));
        assert_eq!(parse_size("100", 'm').unwrap(), (Sign::Abs, 100 << 20));
        assert_eq!(parse_size("64k", 'k').unwrap(), (Sign::Abs, 65536));
        assert_eq!(parse_size("-4m", 'm').unwrap(), (Sign::Minus, 4 << 20));
        assert_eq!(parse_size(".5k", 'm').unwrap(), (Sign::Abs, 512));
        assert!(parse_size("8Q", 'm').is_err());
        assert!(parse_size("x", 'm').is_err());
        assert!(parse_size("8MB", 'm').is_err());
        assert!(parse_size(".", 'm').is_err());
        assert!(parse_size("1.2.3m", 'm').is_err());
    }

    /// Above 2^53 an f64 cannot hold every integer: 2^53 + 1 bytes must stay exact.
    #[test]
    fn sizes_are_exact_past_f64() {
        let n = (1u64 << 53) + 1;
        assert_eq!(parse_size(&format!("{n}b"), 'm').unwrap().1, n);
        assert_eq!(
            parse_size(&format!("{}b", u64::MAX), 'm').unwrap().1,
            u64::MAX
        );
        assert!(parse_size("16e", 'm').is_err(), "2^64 bytes does not fit");
        assert!(parse_size(&format!("{}0b", u64::MAX), 'm').is_err());
        assert_eq!(parse_size("15e", 'm').unwrap().1, 15 << 60);
        // (16 - 1e-18) × 2^60 = 2^64 - 1.15…, which rounds up to u64::MAX.
        assert_eq!(
            parse_size("15.999999999999999999e", 'm').unwrap().1,
            u64::MAX
        );
    }

    /// A fraction rounds up to the next whole byte, never down.
    #[test]
    fn fractions_round_up() {
        assert_eq!(parse_size("0.1b", 'm').unwrap().1, 1);
        assert_eq!(parse_size("1.000000000000000001k", 'm').unwrap().1, 1025);
        assert_eq!(
            parse_size("1.50000000000000000000000k", 'm').unwrap().1,
            1536
        );
        assert!(
            parse_size("1.0000000000000000001k", 'm').is_err(),
            "19 decimal places"
        );
        assert_eq!(parse_size("0.25k", 'm').unwrap().1, 256);
        assert_eq!(parse_size("1.50s", 'm').unwrap().1, 768);
    }

    #[test]
    fn extents_args() {
        assert_eq!(
            parse_amount(None, Some("+10")).unwrap(),
            (Sign::Plus, Amount::Extents(10))
        );
        assert_eq!(
            parse_amount(None, Some("50%FREE")).unwrap(),
            (Sign::Abs, Amount::PercentFree(50))
        );
        assert!(parse_amount(Some("1m"), Some("1")).is_err());
    }
}
