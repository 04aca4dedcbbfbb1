//! The libdm config syntax LVM metadata is written in: an ordered tree of
//! `key = value` assignments and `name { ... }` sections.
//!
//! Every node remembers the byte span it was parsed from, so parts of a VG
//! that ferrolvm does not manage can be written back exactly as they were read.

use std::ops::Range;

use crate::Error;

/// Deepest nesting accepted (LVM metadata uses 5 levels); bounds recursion on hostile input.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    /// Kept as written; LVM metadata never needs float arithmetic.
    Float(String),
    Str(String),
    Array(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Value(Value),
    Section(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub key: String,
    pub value: NodeValue,
    /// Bytes of the source this node came from, key to value end or closing brace.
    pub span: Range<usize>,
}

impl Node {
    pub fn children(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Section(c) => Some(c),
            NodeValue::Value(_) => None,
        }
    }
    pub fn as_value(&self) -> Option<&Value> {
        match &self.value {
            NodeValue::Value(v) => Some(v),
            NodeValue::Section(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    LBracket,
    RBracket,
    Comma,
    Eq,
    /// A quoted string, already unescaped.
    Quoted(String),
    Word(String),
    End,
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn line(&self) -> usize {
        1 + self.src[..self.pos.min(self.src.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
    }

    fn err(&self, what: &'static str) -> Error {
        Error::Syntax {
            line: self.line(),
            what,
        }
    }

    fn skip_space(&mut self) {
        while self.pos < self.src.len() {
            let c = self.src[self.pos];
            if c == 0 {
                // Parsing stops at NUL, like LVM.
                self.src = &self.src[..self.pos];
                return;
            }
            if c.is_ascii_whitespace() || c == 0x0b {
                self.pos += 1;
            } else if c == b'#' {
                while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                    self.pos += 1;
                }
            } else {
                return;
            }
        }
    }

    /// Returns the token and the position where it started.
    fn next(&mut self) -> Result<(Tok, usize), Error> {
        self.skip_space();
        let start = self.pos;
        let Some(&c) = self.src.get(self.pos) else {
            return Ok((Tok::End, start));
        };
        self.pos += 1;
        let t = match c {
            b'{' => Tok::Open,
            b'}' => Tok::Close,
            b'[' => Tok::LBracket,
            b']' => Tok::RBracket,
            b',' => Tok::Comma,
            b'=' => Tok::Eq,
            b'"' => Tok::Quoted(self.quoted(b'"', true)?),
            b'\'' => Tok::Quoted(self.quoted(b'\'', false)?),
            _ => {
                while let Some(&c) = self.src.get(self.pos) {
                    if c.is_ascii_whitespace() || b"#={}[],\"'".contains(&c) || c == 0 {
                        break;
                    }
                    self.pos += 1;
                }
                let w = std::str::from_utf8(&self.src[start..self.pos])
                    .map_err(|_| self.err("invalid UTF-8"))?;
                Tok::Word(w.to_string())
            }
        };
        Ok((t, start))
    }

    fn quoted(&mut self, q: u8, escapes: bool) -> Result<String, Error> {
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.src.get(self.pos) else {
                return Err(self.err("unterminated string"));
            };
            self.pos += 1;
            if c == q {
                break;
            }
            if escapes && c == b'\\' {
                if let Some(&n) = self.src.get(self.pos) {
                    if n == b'"' || n == b'\\' {
                        out.push(n);
                        self.pos += 1;
                        continue;
                    }
                }
            }
            out.push(c);
        }
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8 in string"))
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<(Tok, usize)>,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<&Tok, Error> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex.next()?);
        }
        Ok(self.peeked.as_ref().map(|p| &p.0).unwrap_or(&Tok::End))
    }

    fn bump(&mut self) -> Result<(Tok, usize), Error> {
        match self.peeked.take() {
            Some(p) => Ok(p),
            None => self.lex.next(),
        }
    }

    fn nodes(&mut self, depth: usize, in_section: bool) -> Result<Vec<Node>, Error> {
        if depth > MAX_DEPTH {
            return Err(self.lex.err("sections nested too deeply"));
        }
        let mut out = Vec::new();
        loop {
            let (t, start) = self.bump()?;
            let key = match t {
                Tok::End if !in_section => return Ok(out),
                Tok::End => return Err(self.lex.err("missing '}'")),
                Tok::Close if in_section => return Ok(out),
                Tok::Word(w) => w,
                Tok::Quoted(q) => q,
                _ => return Err(self.lex.err("expected a key or section name")),
            };
            match self.bump()? {
                (Tok::Eq, _) => {
                    let value = self.value(depth)?;
                    out.push(Node {
                        key,
                        value: NodeValue::Value(value),
                        span: start..self.lex.pos,
                    });
                }
                (Tok::Open, _) => {
                    let children = self.nodes(depth + 1, true)?;
                    out.push(Node {
                        key,
                        value: NodeValue::Section(children),
                        span: start..self.lex.pos,
                    });
                }
                _ => return Err(self.lex.err("expected '=' or '{' after a name")),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        let (t, _) = self.bump()?;
        match t {
            Tok::Quoted(s) => Ok(Value::Str(s)),
            Tok::Word(w) => Ok(scalar(&w)),
            Tok::LBracket => {
                if depth > MAX_DEPTH {
                    return Err(self.lex.err("arrays nested too deeply"));
                }
                let mut items = Vec::new();
                loop {
                    match self.peek()? {
                        Tok::RBracket => {
                            self.bump()?;
                            return Ok(Value::Array(items));
                        }
                        Tok::Comma => {
                            self.bump()?;
                        }
                        Tok::Quoted(_) | Tok::Word(_) => items.push(self.value(depth + 1)?),
                        _ => return Err(self.lex.err("bad array element")),
                    }
                }
            }
            _ => Err(self.lex.err("expected a value")),
        }
    }
}

/// Classifies a bare word like libdm: integer (strtoll base 0), float, or string.
fn scalar(w: &str) -> Value {
    if let Some(i) = parse_int(w) {
        return Value::Int(i);
    }
    let digits = w.strip_prefix(['-', '+']).unwrap_or(w);
    if !digits.is_empty()
        && digits.contains('.')
        && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
    {
        return Value::Float(w.to_string());
    }
    Value::Str(w.to_string())
}

fn parse_int(w: &str) -> Option<i64> {
    let (neg, body) = match w.as_bytes().first()? {
        b'-' => (true, &w[1..]),
        b'+' => (false, &w[1..]),
        _ => (false, w),
    };
    let (radix, digits) =
        if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, h)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    if digits.is_empty() || !digits.bytes().all(|c| (c as char).is_digit(radix)) {
        return None;
    }
    let v = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if neg { -v } else { v }).ok()
}

/// Parses a whole metadata text (stops at the first NUL).
pub fn parse(text: &[u8]) -> Result<Vec<Node>, Error> {
    let mut p = Parser {
        lex: Lexer { src: text, pos: 0 },
        peeked: None,
    };
    p.nodes(0, false)
}

/// Looks up the first node named `key` (LVM ignores later duplicates).
pub fn find<'a>(nodes: &'a [Node], key: &str) -> Option<&'a Node> {
    nodes.iter().find(|n| n.key == key)
}

/// Writes a value in LVM's raw formatting.
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(f),
        Value::Str(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
    }
}

pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lvm_syntax() {
        let t = b"vg {\nid = \"x\"\nseqno = 0x10\nlist = [\"a\", 'b' 3, -4]\n\"my-lv\" {\nf = 1.5\nw = bare\n}\n# comment\n}\ncontents = \"C\"\0trailing garbage {";
        let n = parse(t).unwrap();
        assert_eq!(n.len(), 2);
        let vg = n[0].children().unwrap();
        assert_eq!(find(vg, "seqno").unwrap().as_value(), Some(&Value::Int(16)));
        assert_eq!(
            find(vg, "list").unwrap().as_value(),
            Some(&Value::Array(vec![
                Value::Str("a".into()),
                Value::Str("b".into()),
                Value::Int(3),
                Value::Int(-4)
            ]))
        );
        let lv = find(vg, "my-lv").unwrap();
        assert_eq!(&t[lv.span.clone()], b"\"my-lv\" {\nf = 1.5\nw = bare\n}");
        assert_eq!(
            find(lv.children().unwrap(), "f").unwrap().as_value(),
            Some(&Value::Float("1.5".into()))
        );
        assert_eq!(
            find(lv.children().unwrap(), "w").unwrap().as_value(),
            Some(&Value::Str("bare".into()))
        );
    }

    #[test]
    fn escapes_round_trip() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c");
        let n = parse(format!("k = {out}").as_bytes()).unwrap();
        assert_eq!(n[0].as_value(), Some(&Value::Str("a\"b\\c".into())));
    }

    #[test]
    fn errors_not_panics() {
        for bad in [
            &b"vg {"[..],
            b"vg { a = }",
            b"= 1",
            b"a = [1, {",
            b"a = \"x",
            b"a b",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "a {".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn octal_and_overflow() {
        assert_eq!(scalar("010"), Value::Int(8));
        assert_eq!(scalar("0"), Value::Int(0));
        assert_eq!(
            scalar("99999999999999999999"),
            Value::Str("99999999999999999999".into())
        );
    }
}
