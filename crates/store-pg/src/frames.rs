//! The journal in rows: a batch encoded as the embedded journal's frames on append, and
//! read back page by page through the embedded store's decoder (every frame's checksum
//! and sequence numbers checked).

use std::io::Read;
use std::sync::Arc;

use proof_store::journal::{self, JournalReader, ReadError};
use proof_store::{AppendFlags, InvocationMeta, JournalRecord, RecordIter, StoreError};

use crate::pool::Pool;
use crate::{i, u};

/// Encodes a batch as the embedded journal does ([`journal::frame_ranges`]): one
/// (first seq, record count, frame bytes) per frame, the batch's flags on the last.
pub(crate) fn encode_frames(
    enc: &mut journal::FrameEncoder,
    records: &[JournalRecord],
    flags: AppendFlags,
) -> std::io::Result<Vec<(u64, i32, Vec<u8>)>> {
    let ranges = journal::frame_ranges(records);
    let last = ranges.len().saturating_sub(1);
    ranges
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let fl = if i == last {
                flags
            } else {
                AppendFlags::default()
            };
            let (seq, count) = (records[r.start].seq, r.len() as i32);
            let mut buf = Vec::new();
            enc.encode_frame(&mut buf, seq, &records[r], fl)?;
            Ok((seq, count, buf))
        })
        .collect()
}

/// The records of invocation `id` (`meta`) up to seq `upto` (its state when the read
/// began), fetched from `pool` as they are consumed.
pub(crate) fn read(
    pool: Pool,
    display: &str,
    id: &str,
    meta: &InvocationMeta,
    upto: u64,
) -> Result<RecordIter, StoreError> {
    let source = FrameSource {
        pool,
        display: Arc::from(display),
        id: id.to_string(),
        upto,
        next_first: 1,
        buf: journal::encode_header(meta),
        pos: 0,
        done: false,
    };
    let (reader, _) = JournalReader::open(source).map_err(|e| read_err(id, e))?;
    Ok(Box::new(FrameIter {
        reader,
        id: id.to_string(),
        upto,
        current: Vec::new().into_iter(),
        last: 0,
        done: false,
    }))
}

fn read_err(id: &str, e: ReadError) -> StoreError {
    match e {
        ReadError::Io(source) => match source
            .get_ref()
            .and_then(|s| s.downcast_ref::<SourceError>())
        {
            Some(_) => {
                let msg = source.to_string();
                StoreError::Database {
                    context: format!("reading the frames of {id:?}"),
                    source: msg.into(),
                }
            }
            None => StoreError::Io {
                context: format!("reading the frames of {id:?}"),
                source,
            },
        },
        ReadError::Decode(d) => StoreError::Corrupt {
            path: format!("postgres:frames/{id}").into(),
            offset: d.offset,
            reason: d.reason,
        },
    }
}

/// A database failure inside [`FrameSource`], carried through `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SourceError(String);

/// Frames per query when reading.
const READ_PAGE: i64 = 32;

/// The journal as one byte stream (header, then frames fetched page by page), so the
/// embedded store's decoder checks every frame's checksum and sequence numbers.
struct FrameSource {
    pool: Pool,
    display: Arc<str>,
    id: String,
    /// Read only frames that start at or before this seq (the state when `read` began).
    upto: u64,
    next_first: u64,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl FrameSource {
    fn fetch(&mut self) -> Result<(), SourceError> {
        let mut c = self
            .pool
            .get()
            .map_err(|e| SourceError(format!("connecting to {}: {e}", self.display)))?;
        let rows = c
            .query(
                "SELECT first_seq, records, data FROM frames WHERE invocation_id = $1 \
                 AND first_seq >= $2 AND first_seq <= $3 ORDER BY first_seq LIMIT $4",
                &[&self.id, &i(self.next_first), &i(self.upto), &READ_PAGE],
            )
            .map_err(|e| SourceError(format!("reading frames: {e}")))?;
        self.buf.clear();
        self.pos = 0;
        if rows.is_empty() {
            self.done = true;
        }
        for r in rows {
            let first: i64 = r.get(0);
            let n: i32 = r.get(1);
            let data: &[u8] = r.get(2);
            self.buf.extend_from_slice(data);
            self.next_first = u(first) + u(i64::from(n));
        }
        Ok(())
    }
}

impl Read for FrameSource {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done || self.next_first > self.upto {
                return Ok(0);
            }
            self.fetch().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Streams records frame by frame; fails if the journal ends before the snapshot's
/// last sequence number (the invocation was deleted while being read).
struct FrameIter {
    reader: JournalReader<FrameSource>,
    id: String,
    upto: u64,
    current: std::vec::IntoIter<JournalRecord>,
    last: u64,
    done: bool,
}

impl Iterator for FrameIter {
    type Item = Result<JournalRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                self.last = r.seq;
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.reader.next_frame() {
                Ok(Some((_, records))) => self.current = records.into_iter(),
                Ok(None) => {
                    self.done = true;
                    if self.last < self.upto {
                        return Some(Err(StoreError::Corrupt {
                            path: format!("postgres:frames/{}", self.id).into(),
                            offset: 0,
                            reason: format!(
                                "the stored frames end at seq {}, the invocation's state says {} (deleted while reading?)",
                                self.last, self.upto
                            ),
                        }));
                    }
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(read_err(&self.id, e)));
                }
            }
        }
    }
}
