//! The JSON lexer ([`Lexer`]): tokens off one line, giving up wherever
//! serde_json would read the text differently.

use super::{scalar::Scalar, GiveUp};

/// How deep objects and arrays may nest on this path (Bazel's nest a few
/// levels; serde_json, in the general path, refuses more than 127).
const MAX_NESTING: usize = 100;

/// The longest number an undeclared field may hold on this path (serde_json
/// reads longer ones as floats, and may find them out of range).
const MAX_SKIPPED_NUMBER: usize = 64;

/// Reads JSON tokens off one line. It knows the JSON grammar (RFC 8259) and
/// gives up, rather than guessing, wherever serde_json (which the general path
/// uses) would read a value differently or refuse the text: numbers with a
/// fraction or an exponent, integers beyond 64 bits, `-0`, lone surrogates,
/// raw control characters in strings, text that is not UTF-8.
///
/// UTF-8 is checked only where a string has a byte above ASCII: anywhere
/// else such a byte is not JSON, and the lexer gives up there anyway.
pub(super) struct Lexer<'a> {
    pub(super) src: &'a [u8],
    pub(super) pos: usize,
    /// Objects and arrays open.
    pub(super) nesting: usize,
    /// A string with escapes or non-ASCII bytes, decoded and checked.
    pub(super) scratch: Vec<u8>,
}

impl<'a> Lexer<'a> {
    /// The next byte after whitespace, not consumed.
    #[inline(always)]
    pub(super) fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.src.get(self.pos) {
            match b {
                b' ' | b'\n' | b'\r' | b'\t' => self.pos += 1,
                _ => return Some(b),
            }
        }
        None
    }

    #[inline(always)]
    pub(super) fn eat(&mut self, want: u8) -> Result<(), GiveUp> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// Opens an object or an array (`open` is next).
    #[inline]
    pub(super) fn open(&mut self, open: u8) -> Result<(), GiveUp> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(GiveUp);
        }
        self.eat(open)
    }

    /// After a member or an element: `true` at the closing `close` (which
    /// closes the object or array), `false` after a comma.
    #[inline(always)]
    pub(super) fn next_or_close(&mut self, close: u8) -> Result<bool, GiveUp> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b) if b == close => {
                self.pos += 1;
                self.nesting -= 1;
                Ok(true)
            }
            _ => Err(GiveUp),
        }
    }

    /// Whether the object or array just opened is empty (and then closes it).
    #[inline(always)]
    pub(super) fn empty(&mut self, close: u8) -> bool {
        if self.peek() == Some(close) {
            self.pos += 1;
            self.nesting -= 1;
            true
        } else {
            false
        }
    }

    /// Reads past one JSON value (next), checking it as serde_json would
    /// read it: the value of a field our schema does not declare, which the
    /// general path skips too. Numbers with an exponent, and long ones, are
    /// left to the general path.
    pub(super) fn skip(&mut self) -> Result<(), GiveUp> {
        match self.peek().ok_or(GiveUp)? {
            b'"' => {
                self.string()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.skip_number()?,
            b'[' => {
                self.open(b'[')?;
                if !self.empty(b']') {
                    loop {
                        self.skip()?;
                        if self.next_or_close(b']')? {
                            break;
                        }
                    }
                }
            }
            b'{' => {
                self.open(b'{')?;
                if !self.empty(b'}') {
                    loop {
                        if self.peek() != Some(b'"') {
                            return Err(GiveUp);
                        }
                        self.string()?;
                        self.eat(b':')?;
                        self.skip()?;
                        if self.next_or_close(b'}')? {
                            break;
                        }
                    }
                }
            }
            _ => return Err(GiveUp),
        }
        Ok(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, not too long.
    pub(super) fn skip_number(&mut self) -> Result<(), GiveUp> {
        let s = self.src;
        let start = self.pos;
        let digits = |i: usize| {
            s[i.min(s.len())..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let mut i = start + usize::from(s[start] == b'-');
        let int = digits(i);
        if int == 0 || (s[i] == b'0' && int > 1) {
            return Err(GiveUp);
        }
        i += int;
        if s.get(i) == Some(&b'.') {
            let frac = digits(i + 1);
            if frac == 0 {
                return Err(GiveUp);
            }
            i += 1 + frac;
        }
        if matches!(s.get(i), Some(b'e' | b'E')) || i - start > MAX_SKIPPED_NUMBER {
            return Err(GiveUp);
        }
        self.pos = i;
        Ok(())
    }

    pub(super) fn literal(&mut self, word: &[u8]) -> Result<(), GiveUp> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// A string's UTF-8 bytes; its opening quote is the next byte. Borrowed
    /// from the line when it is plain ASCII.
    #[inline(always)]
    pub(super) fn string(&mut self) -> Result<&[u8], GiveUp> {
        let s = self.src;
        let start = self.pos + 1;
        let end = start + special(&s[start..]).ok_or(GiveUp)?;
        if s[end] == b'"' {
            self.pos = end + 1;
            return Ok(&s[start..end]);
        }
        self.slow_string(start, end)
    }

    /// The rest of a string from its first backslash, control character or
    /// non-ASCII byte at `at`.
    #[inline(never)]
    pub(super) fn slow_string(&mut self, start: usize, mut at: usize) -> Result<&[u8], GiveUp> {
        let s = self.src;
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let mut from = start;
        loop {
            out.extend_from_slice(&s[from..at]);
            match s[at] {
                b'"' => {
                    self.pos = at + 1;
                    // Escapes decode to whole characters, so the string is
                    // UTF-8 exactly when its raw runs are.
                    std::str::from_utf8(&out).map_err(|_| GiveUp)?;
                    self.scratch = out;
                    return Ok(&self.scratch);
                }
                b'\\' => {}
                0x80.. => {
                    // Non-ASCII bytes: copied as they are, checked at the end.
                    let run = s[at..].iter().take_while(|&&b| b >= 0x80).count();
                    out.extend_from_slice(&s[at..at + run]);
                    from = at + run;
                    at = from + special(s.get(from..).ok_or(GiveUp)?).ok_or(GiveUp)?;
                    continue;
                }
                // A raw control character.
                _ => return Err(GiveUp),
            }
            let esc = *s.get(at + 1).ok_or(GiveUp)?;
            at += 2;
            let mut utf8 = [0u8; 4];
            let c = match esc {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = hex4(s, at)?;
                    at += 4;
                    let c = match hi {
                        0xd800..=0xdbff => {
                            if s.get(at..at + 2) != Some(b"\\u") {
                                return Err(GiveUp);
                            }
                            let lo = hex4(s, at + 2)?;
                            if !(0xdc00..=0xdfff).contains(&lo) {
                                return Err(GiveUp);
                            }
                            at += 6;
                            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                        }
                        0xdc00..=0xdfff => return Err(GiveUp),
                        c => c,
                    };
                    char::from_u32(c).ok_or(GiveUp)?
                }
                _ => return Err(GiveUp),
            };
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            from = at;
            at = from + special(s.get(from..).ok_or(GiveUp)?).ok_or(GiveUp)?;
        }
    }

    /// An integer; its first byte (`-` or a digit) is next.
    #[inline(always)]
    pub(super) fn integer(&mut self) -> Result<Scalar<'static>, GiveUp> {
        let s = self.src;
        let neg = s[self.pos] == b'-';
        let mut i = self.pos + usize::from(neg);
        let first = i;
        let mut v: u64 = 0;
        while let Some(&b) = s.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .ok_or(GiveUp)?;
            i += 1;
        }
        // No digits, a leading zero, a fraction or an exponent.
        if i == first
            || (s[first] == b'0' && i - first > 1)
            || matches!(s.get(i), Some(b'.' | b'e' | b'E'))
        {
            return Err(GiveUp);
        }
        self.pos = i;
        if !neg {
            return Ok(Scalar::U64(v));
        }
        // serde_json reads `-0` as a float.
        match i64::try_from(v) {
            Ok(v) if v != 0 => Ok(Scalar::I64(-v)),
            _ => Err(GiveUp),
        }
    }

    /// A string, a number or a boolean.
    #[inline(always)]
    pub(super) fn scalar(&mut self) -> Result<Scalar<'_>, GiveUp> {
        match self.peek().ok_or(GiveUp)? {
            b'"' => self.string().map(Scalar::Str),
            b't' => self.literal(b"true").map(|()| Scalar::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Scalar::Bool(false)),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => Err(GiveUp),
        }
    }
}

/// Where the first byte that ends a string's plain ASCII run is: a quote, a
/// backslash, a control character or a byte above ASCII (eight bytes at a
/// time, as serde_json scans).
#[inline(always)]
fn special(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (quote, backslash),
        // below 0x20 or above 0x7f; borrows only flag bytes above a true one.
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | v.wrapping_sub(ONES * 0x20) & !v
            | v)
            & HIGH;
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
        .map(|i| at + i)
}

fn hex4(s: &[u8], at: usize) -> Result<u32, GiveUp> {
    let h = s.get(at..at + 4).ok_or(GiveUp)?;
    h.iter().try_fold(0u32, |v, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(GiveUp),
        };
        Ok(v << 4 | u32::from(d))
    })
}
