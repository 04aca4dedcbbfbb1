//! LVM identifiers: 32 characters from `[0-9a-zA-Z!#]`, printed 6-4-4-4-4-4-6.

use std::fmt;

use crate::Error;

const GROUPS: [usize; 7] = [6, 4, 4, 4, 4, 4, 6];
/// LVM generates only from the first 62 characters; `!` and `#` are readable.
const GENERATE_ALPHABET: &[u8; 62] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A 32-character LVM uuid, stored without dashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid([u8; 32]);

fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'!' || c == b'#'
}

impl Uuid {
    /// Builds a uuid from caller-supplied random bytes (this crate never
    /// reads a random source itself).
    pub fn from_random(random: [u8; 32]) -> Self {
        let mut out = [0u8; 32];
        for (o, r) in out.iter_mut().zip(random) {
            *o = GENERATE_ALPHABET[(r % 62) as usize];
        }
        Uuid(out)
    }

    /// Parses the raw 32-byte form found in a pv_header.
    pub fn from_raw(raw: &[u8]) -> Result<Self, Error> {
        if raw.len() != 32 || !raw.iter().all(|&c| valid_char(c)) {
            return Err(Error::BadUuid(String::from_utf8_lossy(raw).into_owned()));
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(raw);
        Ok(Uuid(out))
    }

    /// Parses the dashed (or undashed) text form; dashes are ignored like LVM does.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let raw: Vec<u8> = text.bytes().filter(|&c| c != b'-').collect();
        Self::from_raw(&raw).map_err(|_| Error::BadUuid(text.to_string()))
    }

    pub fn raw(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn raw_str(&self) -> &str {
        // Only ASCII characters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn dashed(&self) -> String {
        let mut s = String::with_capacity(38);
        let mut pos = 0;
        for (i, g) in GROUPS.iter().enumerate() {
            if i > 0 {
                s.push('-');
            }
            s.push_str(&self.raw_str()[pos..pos + g]);
            pos += g;
        }
        s
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dashed())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({})", self.dashed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_round_trip() {
        let u = Uuid::parse("rkt7iS-jJOC-EzC9-uTRI-RgOm-kWU1-bX3cFT").unwrap();
        assert_eq!(u.raw_str(), "rkt7iSjJOCEzC9uTRIRgOmkWU1bX3cFT");
        assert_eq!(u.dashed(), "rkt7iS-jJOC-EzC9-uTRI-RgOm-kWU1-bX3cFT");
    }

    #[test]
    fn rejects_bad() {
        assert!(Uuid::parse("short").is_err());
        assert!(Uuid::parse("rkt7iS-jJOC-EzC9-uTRI-RgOm-kWU1-bX3cF?").is_err());
        assert!(Uuid::parse("!kt7iS-jJOC-EzC9-uTRI-RgOm-kWU1-bX3cF#").is_ok());
    }

    #[test]
    fn generated_uses_62_chars() {
        let u = Uuid::from_random([255; 32]);
        assert!(u.raw().iter().all(|c| c.is_ascii_alphanumeric()));
    }
}
