//! The journal file format: encoding, streaming decoding and the recovery scan.
//!
//! ```text
//! file   = header frame*
//! header = "RBEPJNL\0" | version u16 LE (=1) | reserved u16 (=0) | meta_len u32 LE
//!        | meta (JSON InvocationMeta, meta_len bytes) | crc32 u32 LE of everything before it
//! frame  = "RBF1" | flags u8 | reserved [u8; 3] (=0) | first_seq u64 LE | count u32 LE
//!        | raw_len u32 LE | comp_len u32 LE | crc32 u32 LE (of the 28 header bytes before it
//!        and of the compressed block) | block (zstd, comp_len bytes)
//! block  = record*  (raw_len bytes once decompressed, exactly `count` records)
//! record = seq varint | kind u8 | len varint | payload (len bytes)
//! ```
//!
//! `flags` are the [`AppendFlags`] of the batch (bit 0 build_finished, bit 1 last_message,
//! bit 2 stream_finished), so a scan recomputes the invocation state from the journal alone.
//! Every length read from a file is checked against a fixed cap before it is used, and
//! buffers grow only as bytes actually arrive, so hostile input cannot force big allocations.

use std::io::{self, Read};

use bytes::Bytes;

use crate::error::StoreError;
use crate::types::{AppendFlags, InvocationMeta, InvocationState, JournalRecord, RecordKind};

/// First bytes of every journal file.
pub const FILE_MAGIC: &[u8; 8] = b"RBEPJNL\0";
/// Current (and only) format version.
pub const FORMAT_VERSION: u16 = 1;
/// First bytes of every frame.
pub const FRAME_MAGIC: &[u8; 4] = b"RBF1";
/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 32;
/// Largest decompressed block.
pub const MAX_FRAME_RAW: usize = 64 << 20;
/// Largest compressed block.
pub const MAX_FRAME_COMP: usize = MAX_FRAME_RAW + (MAX_FRAME_RAW >> 7) + (1 << 16);
/// Largest payload of one record.
pub const MAX_RECORD_PAYLOAD: usize = MAX_FRAME_RAW - 32;
/// Largest metadata JSON in the file header.
pub const MAX_META_LEN: usize = 64 << 10;
/// A batch is split into frames of about this many raw bytes (all written with one fsync).
pub const TARGET_FRAME_RAW: usize = 4 << 20;
/// zstd level used for blocks.
pub const ZSTD_LEVEL: i32 = 1;

/// Why decoding stopped before the end of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset of the first byte that is not part of a good header/frame.
    pub offset: u64,
    pub reason: String,
}

/// Decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub flags: AppendFlags,
    pub first_seq: u64,
    pub count: u32,
    pub raw_len: u32,
    pub comp_len: u32,
    pub crc: u32,
}

/// Encodes the file header for `meta`.
pub fn encode_header(meta: &InvocationMeta) -> Vec<u8> {
    let json = serde_json::to_vec(meta).expect("InvocationMeta serializes");
    let mut out = Vec::with_capacity(16 + json.len() + 4);
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Raw (uncompressed) size of one record in a block.
pub fn record_raw_len(r: &JournalRecord) -> usize {
    varint_len(r.seq) + 1 + varint_len(r.payload.len() as u64) + r.payload.len()
}

/// Encodes batches into frames, keeping its zstd context and buffers from one batch to
/// the next: a fresh context and fresh multi-megabyte buffers per frame cost more (in
/// page faults of newly mapped memory) than the compression itself.
pub struct FrameEncoder {
    cctx: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
    comp: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameEncoder").finish_non_exhaustive()
    }
}

/// Buffers bigger than this are not kept for the next batch (a huge record or batch
/// should not pin its memory for the life of the store).
const KEEP_BUFFER: usize = 2 * TARGET_FRAME_RAW + (1 << 20);

impl FrameEncoder {
    pub fn new() -> io::Result<FrameEncoder> {
        Ok(FrameEncoder {
            cctx: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            raw: Vec::new(),
            comp: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Encodes `records` (already checked to be consecutive and each ≤
    /// [`MAX_RECORD_PAYLOAD`]) as one frame, appended to `out`.
    pub fn encode_frame(
        &mut self,
        out: &mut Vec<u8>,
        first_seq: u64,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> io::Result<()> {
        let raw_len: usize = records.iter().map(record_raw_len).sum();
        self.raw.clear();
        self.raw.reserve(raw_len);
        for r in records {
            put_varint(&mut self.raw, r.seq);
            self.raw.push(r.kind.as_u8());
            put_varint(&mut self.raw, r.payload.len() as u64);
            self.raw.extend_from_slice(&r.payload);
        }
        self.comp.clear();
        self.comp
            .reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
        self.cctx.compress_to_buffer(&self.raw, &mut self.comp)?;
        let start = out.len();
        out.reserve(FRAME_HEADER_LEN + self.comp.len());
        out.extend_from_slice(FRAME_MAGIC);
        out.push(flags.to_bits());
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&first_seq.to_le_bytes());
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.raw.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.comp.len() as u32).to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&out[start..]);
        h.update(&self.comp);
        out.extend_from_slice(&h.finalize().to_le_bytes());
        out.extend_from_slice(&self.comp);
        Ok(())
    }

    /// Encodes one `append` batch as one or more frames (split at about
    /// [`TARGET_FRAME_RAW`]) and returns the bytes to write, which stay valid until the
    /// next call. The flags go on the last frame only, so they survive only if the whole
    /// batch does. An empty batch gives a zero-record frame carrying only the flags, at
    /// `next_seq`.
    pub fn encode_batch(
        &mut self,
        next_seq: u64,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> io::Result<&[u8]> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let res = self.encode_batch_into(&mut out, next_seq, records, flags);
        self.out = out;
        self.trim();
        res?;
        Ok(&self.out)
    }

    fn encode_batch_into(
        &mut self,
        out: &mut Vec<u8>,
        next_seq: u64,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> io::Result<()> {
        if records.is_empty() {
            return self.encode_frame(out, next_seq, &[], flags);
        }
        let ranges = frame_ranges(records);
        let last = ranges.len() - 1;
        for (i, r) in ranges.into_iter().enumerate() {
            let fl = if i == last {
                flags
            } else {
                AppendFlags::default()
            };
            self.encode_frame(out, records[r.start].seq, &records[r], fl)?;
        }
        Ok(())
    }

    /// Drops the scratch buffers that grew past what an ordinary batch needs.
    fn trim(&mut self) {
        for b in [&mut self.raw, &mut self.comp] {
            if b.capacity() > KEEP_BUFFER {
                *b = Vec::new();
            }
        }
    }

    /// Drops the output buffer if it grew past what an ordinary batch needs (call after
    /// the bytes of [`FrameEncoder::encode_batch`] have been written).
    pub fn release_output(&mut self) {
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        }
    }
}

/// A few [`FrameEncoder`]s kept between appends, so concurrent appenders each get one
/// and a lone appender reuses the same one every time.
#[derive(Debug, Default)]
pub struct EncoderPool {
    idle: std::sync::Mutex<Vec<FrameEncoder>>,
}

/// How many idle encoders a pool keeps.
const POOL_IDLE: usize = 4;

impl EncoderPool {
    /// An encoder from the pool (a new one if none is idle); it goes back to the pool
    /// when dropped.
    pub fn get(&self) -> io::Result<PooledEncoder<'_>> {
        let idle = self.lock().pop();
        let enc = match idle {
            Some(e) => e,
            None => FrameEncoder::new()?,
        };
        Ok(PooledEncoder {
            pool: self,
            enc: Some(enc),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FrameEncoder>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An encoder borrowed from an [`EncoderPool`].
#[derive(Debug)]
pub struct PooledEncoder<'a> {
    pool: &'a EncoderPool,
    enc: Option<FrameEncoder>,
}

impl std::ops::Deref for PooledEncoder<'_> {
    type Target = FrameEncoder;
    fn deref(&self) -> &FrameEncoder {
        self.enc.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for PooledEncoder<'_> {
    fn deref_mut(&mut self) -> &mut FrameEncoder {
        self.enc.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledEncoder<'_> {
    fn drop(&mut self) {
        if let Some(mut enc) = self.enc.take() {
            enc.release_output();
            let mut idle = self.pool.lock();
            if idle.len() < POOL_IDLE {
                idle.push(enc);
            }
        }
    }
}

/// Refuses a record whose payload is over [`MAX_RECORD_PAYLOAD`].
pub fn check_record_size(id: &str, r: &JournalRecord) -> Result<(), StoreError> {
    if r.payload.len() > MAX_RECORD_PAYLOAD {
        return Err(StoreError::RecordTooLarge {
            id: id.to_string(),
            seq: r.seq,
            len: r.payload.len(),
            max: MAX_RECORD_PAYLOAD,
        });
    }
    Ok(())
}

/// Checks a batch for `append` to an invocation whose last record is `last_seq`: it
/// starts at `last_seq + 1`, is consecutive, and every payload fits a record.
pub fn check_batch(id: &str, last_seq: u64, records: &[JournalRecord]) -> Result<(), StoreError> {
    let expected = last_seq + 1;
    if let Some(first) = records.first() {
        if first.seq != expected {
            return Err(StoreError::SeqGap {
                id: id.to_string(),
                expected,
                got: first.seq,
            });
        }
    }
    for (i, r) in records.iter().enumerate() {
        if r.seq != expected + i as u64 {
            return Err(StoreError::NonConsecutive {
                id: id.to_string(),
                index: i,
                expected: expected + i as u64,
                got: r.seq,
            });
        }
        check_record_size(id, r)?;
    }
    Ok(())
}

/// How a batch splits into frames of about [`TARGET_FRAME_RAW`] raw bytes: the range of
/// records of each frame, in order, none empty (none at all for an empty batch). The
/// batch's flags belong on the last frame only, so they survive only if all of it does.
pub fn frame_ranges(records: &[JournalRecord]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, r) in records.iter().enumerate() {
        let len = record_raw_len(r);
        if i > start && size + len > TARGET_FRAME_RAW {
            ranges.push(start..i);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < records.len() {
        ranges.push(start..records.len());
    }
    ranges
}

/// Encodes `records` (already checked to be consecutive and each ≤ [`MAX_RECORD_PAYLOAD`])
/// as one frame, appended to `out`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    first_seq: u64,
    records: &[JournalRecord],
    flags: AppendFlags,
) -> io::Result<()> {
    FrameEncoder::new()?.encode_frame(out, first_seq, records, flags)
}

/// Encodes one `append` batch as one or more frames (split at about [`TARGET_FRAME_RAW`]).
/// The flags go on the last frame only, so they survive only if the whole batch does.
pub fn encode_batch(records: &[JournalRecord], flags: AppendFlags) -> io::Result<Vec<u8>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    Ok(FrameEncoder::new()?
        .encode_batch(records[0].seq, records, flags)?
        .to_vec())
}

/// Encodes a zero-record frame that only carries flags (an empty `append` with flags).
pub fn encode_flags_frame(next_seq: u64, flags: AppendFlags) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_frame(&mut out, next_seq, &[], flags)?;
    Ok(out)
}

/// Reads exactly `buf.len()` bytes or reports how many arrived before end of input.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads up to `len` bytes, growing the buffer only as data arrives.
fn read_bounded<R: Read>(r: &mut R, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len.min(1 << 20));
    r.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Either an I/O failure of the underlying reader or bad data at an offset.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Decode(DecodeError),
}

/// Streaming decoder of a journal. Holds one frame in memory at a time.
#[derive(Debug)]
pub struct JournalReader<R> {
    inner: R,
    offset: u64,
    next_seq: u64,
}

impl<R: Read> JournalReader<R> {
    /// Reads and checks the file header.
    pub fn open(mut inner: R) -> Result<(Self, InvocationMeta), ReadError> {
        let bad = |reason: String| ReadError::Decode(DecodeError { offset: 0, reason });
        let mut fixed = [0u8; 16];
        let n = read_full(&mut inner, &mut fixed).map_err(ReadError::Io)?;
        if n < 16 {
            return Err(bad(format!("file header is truncated ({n} of 16 bytes)")));
        }
        if &fixed[..8] != FILE_MAGIC {
            return Err(bad("not a journal file (bad magic)".into()));
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "unsupported journal format version {version} (this build reads version {FORMAT_VERSION})"
            )));
        }
        let meta_len = u32::from_le_bytes(fixed[12..16].try_into().unwrap()) as usize;
        if meta_len > MAX_META_LEN {
            return Err(bad(format!(
                "header metadata length {meta_len} exceeds the {MAX_META_LEN}-byte limit"
            )));
        }
        let meta = read_bounded(&mut inner, meta_len).map_err(ReadError::Io)?;
        let mut crc = [0u8; 4];
        if meta.len() < meta_len || read_full(&mut inner, &mut crc).map_err(ReadError::Io)? < 4 {
            return Err(bad("file header is truncated".into()));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&fixed);
        h.update(&meta);
        if !crc_matches(h.finalize(), u32::from_le_bytes(crc)) {
            return Err(bad("file header checksum mismatch".into()));
        }
        let meta: InvocationMeta = serde_json::from_slice(&meta)
            .map_err(|e| bad(format!("header metadata is not valid JSON: {e}")))?;
        let offset = 16 + meta_len as u64 + 4;
        Ok((
            JournalReader {
                inner,
                offset,
                next_seq: 1,
            },
            meta,
        ))
    }

    /// Offset just after the last good frame read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Sequence number the next frame must start with.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Reads the next frame. `Ok(None)` at a clean end of input.
    pub fn next_frame(&mut self) -> Result<Option<(FrameHeader, Vec<JournalRecord>)>, ReadError> {
        let offset = self.offset;
        let bad = |reason: String| ReadError::Decode(DecodeError { offset, reason });
        let mut hb = [0u8; FRAME_HEADER_LEN];
        let n = read_full(&mut self.inner, &mut hb).map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        if n < FRAME_HEADER_LEN {
            return Err(bad(format!(
                "short frame header ({n} of {FRAME_HEADER_LEN} bytes)"
            )));
        }
        if &hb[..4] != FRAME_MAGIC {
            return Err(bad("bad frame magic".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(hb[i..i + 4].try_into().unwrap());
        let flags_byte = hb[4];
        if flags_byte & !7 != 0 || hb[5..8] != [0, 0, 0] {
            return Err(bad(format!("unknown frame flags {flags_byte:#x}")));
        }
        let hdr = FrameHeader {
            flags: AppendFlags::from_bits(flags_byte),
            first_seq: u64::from_le_bytes(hb[8..16].try_into().unwrap()),
            count: u32_at(16),
            raw_len: u32_at(20),
            comp_len: u32_at(24),
            crc: u32_at(28),
        };
        if hdr.raw_len as usize > MAX_FRAME_RAW || hdr.comp_len as usize > MAX_FRAME_COMP {
            return Err(bad(format!(
                "frame lengths out of range (raw {}, compressed {})",
                hdr.raw_len, hdr.comp_len
            )));
        }
        let comp = read_bounded(&mut self.inner, hdr.comp_len as usize).map_err(ReadError::Io)?;
        if comp.len() < hdr.comp_len as usize {
            return Err(bad(format!(
                "short frame body ({} of {} bytes)",
                comp.len(),
                hdr.comp_len
            )));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&hb[..28]);
        h.update(&comp);
        if !crc_matches(h.finalize(), hdr.crc) {
            return Err(bad("frame checksum mismatch".into()));
        }
        if hdr.first_seq != self.next_seq {
            return Err(bad(format!(
                "frame starts at seq {}, expected {}",
                hdr.first_seq, self.next_seq
            )));
        }
        if hdr.first_seq.checked_add(u64::from(hdr.count)).is_none() {
            return Err(bad("frame sequence numbers overflow u64".into()));
        }
        let records = decode_block(&hdr, &comp).map_err(bad)?;
        self.offset += (FRAME_HEADER_LEN + comp.len()) as u64;
        self.next_seq += u64::from(hdr.count);
        Ok(Some((hdr, records)))
    }
}

/// Checksum comparison. Fuzz builds (`--cfg fuzzing`, set by cargo-fuzz) accept any
/// checksum so the fuzzer can reach the decoders behind it.
fn crc_matches(computed: u32, stored: u32) -> bool {
    cfg!(fuzzing) || computed == stored
}

/// Decompresses and parses one block, checking it against its header.
fn decode_block(hdr: &FrameHeader, comp: &[u8]) -> Result<Vec<JournalRecord>, String> {
    let raw_len = hdr.raw_len as usize;
    let mut raw = Vec::with_capacity(raw_len.min(1 << 20));
    let dec = zstd::stream::read::Decoder::with_buffer(comp)
        .map_err(|e| format!("zstd init failed: {e}"))?;
    dec.take(raw_len as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("block does not decompress: {e}"))?;
    if raw.len() != raw_len {
        return Err(format!(
            "block decompresses to {} bytes, header says {raw_len}",
            raw.len()
        ));
    }
    let raw = Bytes::from(raw);
    // Each record takes at least 3 bytes, which bounds the Vec below by the real data.
    if hdr.count as usize > raw.len() / 3 + 1 {
        return Err(format!(
            "frame claims {} records in {} bytes",
            hdr.count,
            raw.len()
        ));
    }
    let mut records = Vec::with_capacity(hdr.count as usize);
    let mut pos = 0usize;
    let mut expect = hdr.first_seq;
    while pos < raw.len() {
        let at = pos;
        let seq = read_varint(&raw, &mut pos)
            .ok_or_else(|| format!("bad seq varint at block byte {at}"))?;
        if seq != expect {
            return Err(format!("record seq {seq} where {expect} was expected"));
        }
        let kb = *raw.get(pos).ok_or("record truncated before kind byte")?;
        pos += 1;
        let kind = RecordKind::from_u8(kb).ok_or_else(|| format!("unknown record kind {kb}"))?;
        let len = read_varint(&raw, &mut pos).ok_or("bad length varint")?;
        if len > (raw.len() - pos) as u64 {
            return Err(format!(
                "record seq {seq} payload length {len} runs past the block"
            ));
        }
        let len = len as usize;
        records.push(JournalRecord {
            seq,
            kind,
            payload: raw.slice(pos..pos + len),
        });
        pos += len;
        expect = expect.wrapping_add(1);
        if records.len() > hdr.count as usize {
            return Err(format!(
                "block holds more than the {} records its header says",
                hdr.count
            ));
        }
    }
    if records.len() != hdr.count as usize {
        return Err(format!(
            "block holds {} records, header says {}",
            records.len(),
            hdr.count
        ));
    }
    Ok(records)
}

/// Applies a decoded frame to a running state.
pub fn apply_frame(state: &mut InvocationState, hdr: &FrameHeader, records: &[JournalRecord]) {
    for r in records {
        state.last_seq = r.seq;
        state.record_count += 1;
        state.bytes += r.payload.len() as u64;
        if r.kind == RecordKind::BepEvent {
            state.event_count += 1;
        }
    }
    state.saw_build_finished |= hdr.flags.saw_build_finished;
    state.saw_last_message |= hdr.flags.saw_last_message;
    state.saw_stream_finished |= hdr.flags.saw_stream_finished;
}

/// Result of scanning a whole journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    /// `None` if the file header itself is bad (then `error` says why).
    pub meta: Option<InvocationMeta>,
    /// State recomputed from the good frames (`journal_bytes` = `good_len`).
    pub state: InvocationState,
    pub frames: u64,
    /// Length of the good prefix: header plus every frame that decoded.
    pub good_len: u64,
    /// Length of the input.
    pub total_len: u64,
    /// Why the scan stopped before `total_len` (a torn or corrupt tail), if it did.
    pub error: Option<DecodeError>,
}

/// Scans a journal from any reader. I/O errors of the reader are returned as `Err`;
/// bad data is reported in [`ScanResult::error`].
pub fn scan_reader<R: Read>(inner: R, total_len: u64) -> io::Result<ScanResult> {
    let mut res = ScanResult {
        meta: None,
        state: InvocationState::default(),
        frames: 0,
        good_len: 0,
        total_len,
        error: None,
    };
    let mut rd = match JournalReader::open(inner) {
        Ok((rd, meta)) => {
            res.meta = Some(meta);
            rd
        }
        Err(ReadError::Io(e)) => return Err(e),
        Err(ReadError::Decode(e)) => {
            res.error = Some(e);
            return Ok(res);
        }
    };
    res.good_len = rd.offset();
    loop {
        match rd.next_frame() {
            Ok(Some((hdr, records))) => {
                apply_frame(&mut res.state, &hdr, &records);
                res.frames += 1;
                res.good_len = rd.offset();
            }
            Ok(None) => break,
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Decode(e)) => {
                res.error = Some(e);
                break;
            }
        }
    }
    res.state.journal_bytes = res.good_len;
    Ok(res)
}

/// Scans an in-memory journal. Pure; never panics on any input (this is the fuzz entry point).
pub fn scan(bytes: &[u8]) -> ScanResult {
    scan_reader(bytes, bytes.len() as u64).expect("reading from a byte slice cannot fail")
}
