//! The canonical tar container of a proof artifact.
//!
//! Every artifact has exactly one valid byte form: members in the fixed order
//! [`STATEMENT`], [`EVENTS`], optional [`EXECLOG`], optional [`GRPCLOG`],
//! optional [`CORROBORATION`], optional [`EXECUTOR`], optional [`ORIGIN`],
//! [`SUMMARY`] (see [`ORDER`]); each header is
//! a plain ustar header (mode 0644, uid/gid 0, empty uname/gname, mtime 0,
//! typeflag `'0'`, no pax or GNU extensions) with a correct checksum; data is
//! zero-padded to 512 bytes; the archive ends with exactly two zero blocks and
//! nothing after them (no padding to a 10240-byte record).
//! [`scan`] rejects any deviation and never panics.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use thiserror::Error;

pub const BLOCK: usize = 512;
pub const STATEMENT: &str = "statement.dsse.json";
pub const EVENTS: &str = "events.bep.zst";
pub const EXECLOG: &str = "execlog.bin";
pub const SUMMARY: &str = "summary.md";
/// Bazel's `--experimental_remote_grpc_log`, exactly as written.
pub const GRPCLOG: &str = "remote_grpc.log";
/// The executor's raw ActionCache answers (`proof record --corroborate`).
pub const CORROBORATION: &str = "corroboration.bin";
/// The executor's raw answers about the invocation (`proof serve --executor`).
pub const EXECUTOR: &str = "executor.bin";
/// Who submitted the stream (`proof serve`: the authenticated tenant).
pub const ORIGIN: &str = "origin.json";

/// Every member name in archive order, with whether it is optional.
pub const ORDER: [(&str, bool); 8] = [
    (STATEMENT, false),
    (EVENTS, false),
    (EXECLOG, true),
    (GRPCLOG, true),
    (CORROBORATION, true),
    (EXECUTOR, true),
    (ORIGIN, true),
    (SUMMARY, false),
];

/// The members that may follow a member at `ORDER` index `last` (`None`:
/// the archive start): the next ones up to and including the first required.
fn next_members(last: Option<usize>) -> Vec<&'static str> {
    let start = last.map_or(0, |i| i + 1);
    let mut out = Vec::new();
    for (name, optional) in ORDER.iter().skip(start) {
        out.push(*name);
        if !optional {
            break;
        }
    }
    out
}

fn order_text() -> String {
    ORDER
        .iter()
        .map(|(n, opt)| {
            if *opt {
                format!("[{n}]")
            } else {
                (*n).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Largest member size a ustar header's 11 octal digits can hold.
pub const MAX_MEMBER_SIZE: u64 = 0o77777777777;
/// Members read into memory by [`scan`] are limited to this size.
pub const MAX_IN_MEMORY_MEMBER: u64 = 64 * 1024 * 1024;

/// Why a tar could not be written or read.
#[derive(Debug, Error)]
pub enum TarError {
    #[error("reading the artifact failed: {0}")]
    Io(#[from] io::Error),
    #[error("not a canonical rbe-proof tar: {0}")]
    Layout(String),
}

fn layout<T>(msg: impl Into<String>) -> Result<T, TarError> {
    Err(TarError::Layout(msg.into()))
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// The one canonical header for a member `name` of `size` bytes.
pub fn header(name: &str, size: u64) -> Result<[u8; BLOCK], TarError> {
    if name.is_empty() || name.len() > 100 || name.bytes().any(|b| b == 0) {
        return layout(format!(
            "member name {name:?} must be 1 to 100 bytes without NUL"
        ));
    }
    if size > MAX_MEMBER_SIZE {
        return layout(format!(
            "member {name} is {size} bytes, above the ustar limit of {MAX_MEMBER_SIZE}"
        ));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    Ok(h)
}

fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Writes canonical members in order; call [`TarWriter::finish`] at the end.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Appends member `name` with exactly `size` bytes read from `data` and
    /// returns the SHA-256 of those bytes. Fails if `data` has more or fewer.
    pub fn append(
        &mut self,
        name: &str,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<[u8; 32], TarError> {
        self.out.write_all(&header(name, size)?)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let got = data.read(&mut buf[..want])?;
            if got == 0 {
                return layout(format!("member {name}: its source ended {left} bytes early (it changed while being written?)"));
            }
            hasher.update(&buf[..got]);
            self.out.write_all(&buf[..got])?;
            left -= got as u64;
        }
        if data.read(&mut buf[..1])? != 0 {
            return layout(format!("member {name}: its source has more than the {size} bytes announced (it changed while being written?)"));
        }
        self.out.write_all(&[0u8; BLOCK][..padding(size)])?;
        Ok(hasher.finalize().into())
    }

    /// Writes the two terminating zero blocks and returns the writer.
    pub fn finish(mut self) -> Result<W, TarError> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One member found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: &'static str,
    /// Byte offset of the member's data in the archive.
    pub offset: u64,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// The result of a successful [`scan`].
#[derive(Debug, Clone)]
pub struct Scanned {
    /// Members in archive order.
    pub members: Vec<Member>,
    /// Content of [`STATEMENT`].
    pub statement: Vec<u8>,
    /// Content of [`SUMMARY`].
    pub summary: Vec<u8>,
    /// SHA-256 of the whole archive.
    pub sha256: [u8; 32],
    /// Archive length in bytes.
    pub len: u64,
}

impl Scanned {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

struct Counting<R> {
    inner: R,
    pos: u64,
    whole: Sha256,
}

impl<R: Read> Counting<R> {
    /// Reads exactly `buf.len()` bytes; a short input is a layout error.
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return layout(format!(
                        "truncated: the archive ends at byte {} inside {what}",
                        self.pos + filled as u64
                    ))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TarError::Io(e)),
            }
        }
        self.whole.update(&buf[..]);
        self.pos += buf.len() as u64;
        Ok(())
    }
}

fn parse_size(h: &[u8; BLOCK]) -> Option<u64> {
    let field = &h[124..136];
    if field[11] != 0 || !field[..11].iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    field[..11].iter().try_fold(0u64, |acc, b| {
        acc.checked_mul(8)?.checked_add(u64::from(b - b'0'))
    })
}

/// Sees the data of chosen members while [`scan_tapped`] reads them, so a
/// caller can process a member in the same pass that hashes it.
pub trait Tap {
    /// Member `name` begins; `statement` is the content of [`STATEMENT`]
    /// read so far (all of it, since it is the first member). Return true to
    /// receive the member's data through [`Tap::data`] and then [`Tap::end`].
    fn begin(&mut self, name: &'static str, statement: &[u8]) -> bool;
    /// The next bytes of the member, in order (exactly the bytes hashed).
    fn data(&mut self, chunk: &[u8]);
    /// The member's last byte was passed to [`Tap::data`].
    fn end(&mut self);
}

struct NoTap;

impl Tap for NoTap {
    fn begin(&mut self, _: &'static str, _: &[u8]) -> bool {
        false
    }
    fn data(&mut self, _: &[u8]) {}
    fn end(&mut self) {}
}

/// Reads the archive once, sequentially, checking the canonical layout and
/// hashing every member (and the whole archive). The statement and summary
/// are returned in memory; other members only as offsets and digests.
pub fn scan<R: Read>(input: R) -> Result<Scanned, TarError> {
    scan_tapped(input, &mut NoTap)
}

/// [`scan`], also passing the data of the members `tap` asks for to `tap`.
/// When the scan fails, whatever `tap` saw is to be discarded.
pub fn scan_tapped<R: Read>(input: R, tap: &mut dyn Tap) -> Result<Scanned, TarError> {
    let mut r = Counting {
        inner: input,
        pos: 0,
        whole: Sha256::new(),
    };
    let mut members: Vec<Member> = Vec::new();
    let mut statement = Vec::new();
    let mut summary = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Some((name, size)) = member_header(&mut r, &members)? {
        let offset = r.pos;
        let tapped = tap.begin(name, &statement);
        let kept = match name {
            STATEMENT => Some(&mut statement),
            SUMMARY => Some(&mut summary),
            _ => None,
        };
        let sha256 = if tapped {
            let sha256 = member_data(&mut r, name, size, &mut buf, tap, kept)?;
            tap.end();
            sha256
        } else {
            member_data(&mut r, name, size, &mut buf, &mut NoTap, kept)?
        };
        members.push(Member {
            name,
            offset,
            size,
            sha256,
        });
    }
    if members.last().map(|m| m.name) != Some(SUMMARY) {
        let names: Vec<&str> = members.iter().map(|m| m.name).collect();
        return layout(format!(
            "the archive ends after [{}]; members {} are required (optional ones in brackets)",
            names.join(", "),
            order_text()
        ));
    }
    let end = end_of_archive(&mut r)?;
    Ok(Scanned {
        members,
        statement,
        summary,
        sha256: r.whole.finalize().into(),
        len: end,
    })
}

/// Reads the next member's header and checks it: a name allowed after the
/// members so far, an octal size, and the canonical header bytes. `None` at
/// the first zero block of the end-of-archive marker.
fn member_header<R: Read>(
    r: &mut Counting<R>,
    members: &[Member],
) -> Result<Option<(&'static str, u64)>, TarError> {
    let mut h = [0u8; BLOCK];
    let at = r.pos;
    r.exact(&mut h, "a member header")?;
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let name_len = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
    let found = String::from_utf8_lossy(&h[..name_len]).into_owned();
    let last = members
        .last()
        .and_then(|m| ORDER.iter().position(|(n, _)| *n == m.name));
    let expected = next_members(last);
    let Some(name) = expected
        .iter()
        .copied()
        .find(|n| n.as_bytes() == &h[..name_len])
    else {
        return layout(if expected.is_empty() {
            format!(
                "unexpected extra member {found:?} at byte {at}; {SUMMARY} must be the last member"
            )
        } else {
            format!(
                "member {} at byte {at} is {found:?}; expected {} (order: {})",
                members.len() + 1,
                expected.join(" or "),
                order_text()
            )
        });
    };
    let Some(size) = parse_size(&h) else {
        return layout(format!(
            "member {name} at byte {at}: the size field is not 11 octal digits and a NUL"
        ));
    };
    let canonical = header(name, size)?;
    if canonical != h {
        let first = canonical
            .iter()
            .zip(h.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return layout(format!(
            "member {name} at byte {at}: header byte {first} differs from the canonical ustar header (mode 0644, uid/gid 0, mtime 0, no uname/gname, typeflag '0', correct checksum)"
        ));
    }
    if (name == STATEMENT || name == SUMMARY) && size > MAX_IN_MEMORY_MEMBER {
        return layout(format!(
            "member {name} is {size} bytes, more than the limit of {MAX_IN_MEMORY_MEMBER}"
        ));
    }
    Ok(Some((name, size)))
}

/// Reads a member's data and its zero padding, hashing it, passing it to
/// `tap` and keeping it in `kept` when given; returns its sha256.
fn member_data<R: Read>(
    r: &mut Counting<R>,
    name: &'static str,
    size: u64,
    buf: &mut [u8],
    tap: &mut dyn Tap,
    mut kept: Option<&mut Vec<u8>>,
) -> Result<[u8; 32], TarError> {
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        r.exact(&mut buf[..n], name)?;
        hasher.update(&buf[..n]);
        tap.data(&buf[..n]);
        if let Some(k) = kept.as_deref_mut() {
            k.extend_from_slice(&buf[..n]);
        }
        left -= n as u64;
    }
    let pad = padding(size);
    r.exact(&mut buf[..pad], "padding")?;
    if buf[..pad].iter().any(|&b| b != 0) {
        return layout(format!(
            "member {name}: the padding after its data is not all zero bytes"
        ));
    }
    Ok(hasher.finalize().into())
}

/// Reads the second zero block of the end-of-archive marker and checks that
/// nothing follows it; returns the archive's length.
fn end_of_archive<R: Read>(r: &mut Counting<R>) -> Result<u64, TarError> {
    let mut second = [0u8; BLOCK];
    r.exact(&mut second, "the end-of-archive marker")?;
    if second.iter().any(|&b| b != 0) {
        return layout("the end-of-archive marker is not two zero blocks");
    }
    let end = r.pos;
    let mut extra = [0u8; 1];
    loop {
        match r.inner.read(&mut extra) {
            Ok(0) => return Ok(end),
            Ok(_) => {
                return layout(format!(
                    "trailing bytes after the end-of-archive marker at byte {end}"
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TarError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (name, data) in members {
            w.append(name, data.len() as u64, &mut &data[..]).unwrap();
        }
        w.finish().unwrap()
    }

    fn sample() -> Vec<u8> {
        build(&[
            (STATEMENT, b"{}\n"),
            (EVENTS, &[1u8; 700]),
            (EXECLOG, b""),
            (SUMMARY, b"# hi\n"),
        ])
    }

    fn layout_err(bytes: &[u8]) -> String {
        match scan(bytes) {
            Err(TarError::Layout(m)) => m,
            other => panic!("expected a layout error, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_and_offsets() {
        let bytes = sample();
        assert_eq!(bytes.len(), 512 * (2 + 3 + 1 + 2) + 1024);
        let s = scan(&bytes[..]).unwrap();
        let names: Vec<_> = s.members.iter().map(|m| m.name).collect();
        assert_eq!(names, [STATEMENT, EVENTS, EXECLOG, SUMMARY]);
        assert_eq!(s.statement, b"{}\n");
        assert_eq!(s.summary, b"# hi\n");
        let ev = s.member(EVENTS).unwrap();
        assert_eq!(&bytes[ev.offset as usize..][..700], &[1u8; 700][..]);
        assert_eq!(ev.sha256, <[u8; 32]>::from(Sha256::digest([1u8; 700])));
        assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        // Without the optional exec log.
        let small = build(&[(STATEMENT, b"x"), (EVENTS, b"y"), (SUMMARY, b"z")]);
        assert_eq!(scan(&small[..]).unwrap().members.len(), 3);
        // Every optional member, and each one alone.
        let full = build(&[
            (STATEMENT, b"x"),
            (EVENTS, b"y"),
            (EXECLOG, b"e"),
            (GRPCLOG, b"g"),
            (CORROBORATION, b"c"),
            (SUMMARY, b"z"),
        ]);
        let names: Vec<_> = scan(&full[..])
            .unwrap()
            .members
            .iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [STATEMENT, EVENTS, EXECLOG, GRPCLOG, CORROBORATION, SUMMARY]
        );
        for opt in [GRPCLOG, CORROBORATION] {
            let one = build(&[
                (STATEMENT, b"x"),
                (EVENTS, b"y"),
                (opt, b"o"),
                (SUMMARY, b"z"),
            ]);
            assert_eq!(scan(&one[..]).unwrap().members[2].name, opt);
        }
    }

    #[test]
    fn header_is_plain_ustar() {
        let h = header(EVENTS, 1234).unwrap();
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(&h[136..148], b"00000000000\0");
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        let mut zeroed = h;
        zeroed[148..156].fill(b' ');
        let sum: u32 = zeroed.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(&h[148..156], format!("{sum:06o}\0 ").as_bytes());
        assert!(header(&"a".repeat(101), 1).is_err());
        assert!(header("a", MAX_MEMBER_SIZE + 1).is_err());
    }

    #[test]
    fn rejects_every_kind_of_deviation() {
        let good = sample();
        // Order.
        let swapped = build(&[(EVENTS, b"a"), (STATEMENT, b"b"), (SUMMARY, b"c")]);
        assert!(layout_err(&swapped).contains("expected statement.dsse.json"));
        // Missing and extra members, duplicates.
        let missing = build(&[(STATEMENT, b"a"), (EVENTS, b"b")]);
        assert!(layout_err(&missing).contains("are required"));
        let extra = build(&[
            (STATEMENT, b"a"),
            (EVENTS, b"b"),
            (SUMMARY, b"c"),
            ("x", b"d"),
        ]);
        assert!(layout_err(&extra).contains("extra member"));
        let dup = build(&[
            (STATEMENT, b"a"),
            (EVENTS, b"b"),
            (EVENTS, b"b"),
            (SUMMARY, b"c"),
        ]);
        assert!(layout_err(&dup).contains("is \"events.bep.zst\""));
        // Optional members out of order.
        let reordered = build(&[
            (STATEMENT, b"a"),
            (EVENTS, b"b"),
            (CORROBORATION, b"c"),
            (GRPCLOG, b"d"),
            (SUMMARY, b"e"),
        ]);
        assert!(layout_err(&reordered).contains(
            "is \"remote_grpc.log\"; expected executor.bin or origin.json or summary.md"
        ));
        // Trailing bytes, 10240-byte record padding, missing end block.
        let mut t = good.clone();
        t.push(0);
        assert!(layout_err(&t).contains("trailing"));
        let mut t = good.clone();
        t.resize(t.len().div_ceil(10240) * 10240, 0);
        assert!(layout_err(&t).contains("trailing"));
        assert!(layout_err(&good[..good.len() - 512]).contains("truncated"));
        // Non-zero padding after data: STATEMENT data is 3 bytes at 512.
        let mut t = good.clone();
        t[512 + 100] = 1;
        assert!(layout_err(&t).contains("padding"));
        // Header fields: mode, mtime, uname, checksum, typeflag.
        for (pos, val) in [
            (104usize, b'7'),
            (140, b'1'),
            (265, b'r'),
            (150, b'1'),
            (156, b'5'),
            (260, b'X'),
        ] {
            let mut t = good.clone();
            t[pos] = val;
            layout_err(&t);
        }
        // A pax header member is a different name: rejected.
        let pax = build(&[
            ("././@PaxHeader", b"a"),
            (STATEMENT, b"b"),
            (EVENTS, b"c"),
            (SUMMARY, b"d"),
        ]);
        layout_err(&pax);
        assert!(layout_err(b"").contains("truncated"));
    }

    #[test]
    fn writer_refuses_size_mismatch() {
        let mut w = TarWriter::new(Vec::new());
        assert!(w.append(EVENTS, 5, &mut &b"abc"[..]).is_err());
        let mut w = TarWriter::new(Vec::new());
        assert!(w.append(EVENTS, 2, &mut &b"abc"[..]).is_err());
    }

    #[test]
    fn system_tar_lists_our_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, sample()).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .expect("the system `tar` must be installed for this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert_eq!(listing.lines().count(), 4, "{listing}");
        assert!(listing.contains("events.bep.zst"), "{listing}");
    }
}
