//! Protobuf "delimited" framing: each record is a base-128 varint length
//! followed by that many bytes. Used by `--build_event_binary_file`, the
//! binary execution log, the decompressed compact execution log and our own
//! exported streams.

use std::io::{self, Read};

use thiserror::Error;

/// Largest record accepted by default (Bazel events of ~100 MB exist; we
/// refuse anything above this instead of allocating it).
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024 * 1024;

/// Why a delimited stream could not be read.
#[derive(Debug, Error)]
pub enum FramingError {
    #[error("record {index} at byte {offset}: the length prefix is not a valid varint")]
    BadLength { index: u64, offset: u64 },
    #[error("record {index} at byte {offset}: length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        index: u64,
        offset: u64,
        len: u64,
        max: usize,
    },
    #[error("record {index} at byte {offset}: truncated (expected {expected} bytes, the input ends after {got}); the file was cut short")]
    Truncated {
        index: u64,
        offset: u64,
        expected: u64,
        got: u64,
    },
    #[error("read error at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

/// Appends `payload` with its varint length prefix to `out`.
pub fn write_delimited(out: &mut Vec<u8>, payload: &[u8]) {
    encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Appends the varint encoding of `value` to `out`.
#[inline]
pub fn encode_varint(value: u64, out: &mut Vec<u8>) {
    // Most are one byte: tags, lengths of short strings, small numbers.
    if value < 0x80 {
        out.push(value as u8);
    } else {
        encode_long_varint(value, out);
    }
}

fn encode_long_varint(mut value: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        buf[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    buf[n] = value as u8;
    out.extend_from_slice(&buf[..=n]);
}

/// Decodes a varint from the front of `buf`: `Some((value, bytes used))`, or
/// `None` when `buf` ends inside the varint or the varint is longer than 10 bytes.
pub fn decode_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Iterates over the records of a delimited stream read from `R`, streaming:
/// only one record is held at a time.
pub struct DelimitedReader<R> {
    inner: R,
    offset: u64,
    index: u64,
    max: usize,
    done: bool,
}

impl<R: Read> DelimitedReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, DEFAULT_MAX_RECORD)
    }

    pub fn with_limit(inner: R, max: usize) -> Self {
        Self {
            inner,
            offset: 0,
            index: 0,
            max,
            done: false,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn read_len(&mut self) -> Result<Option<u64>, FramingError> {
        let start = self.offset;
        let mut value: u64 = 0;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            match self.inner.read(&mut byte) {
                Ok(0) if i == 0 => return Ok(None),
                Ok(0) => {
                    return Err(FramingError::Truncated {
                        index: self.index,
                        offset: start,
                        expected: 1,
                        got: 0,
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FramingError::Io {
                        offset: self.offset,
                        source,
                    })
                }
            }
            self.offset += 1;
            value |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                return Ok(Some(value));
            }
        }
        Err(FramingError::BadLength {
            index: self.index,
            offset: start,
        })
    }
}

impl<R: Read> Iterator for DelimitedReader<R> {
    type Item = Result<Vec<u8>, FramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let start = self.offset;
        let result = (|| {
            let Some(len) = self.read_len()? else {
                return Ok(None);
            };
            if len > self.max as u64 {
                return Err(FramingError::TooLarge {
                    index: self.index,
                    offset: start,
                    len,
                    max: self.max,
                });
            }
            let mut buf = Vec::with_capacity(len as usize);
            let got = (&mut self.inner)
                .take(len)
                .read_to_end(&mut buf)
                .map_err(|source| FramingError::Io {
                    offset: self.offset,
                    source,
                })?;
            self.offset += got as u64;
            if (got as u64) < len {
                return Err(FramingError::Truncated {
                    index: self.index,
                    offset: start,
                    expected: len,
                    got: got as u64,
                });
            }
            self.index += 1;
            Ok(Some(buf))
        })();
        match result {
            Ok(Some(buf)) => Some(Ok(buf)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Splits an in-memory delimited buffer into record slices without copying.
pub fn split_delimited(mut buf: &[u8], max: usize) -> Result<Vec<&[u8]>, FramingError> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    while !buf.is_empty() {
        let index = out.len() as u64;
        let (len, used) = decode_varint(buf).ok_or(if buf.len() < 10 {
            FramingError::Truncated {
                index,
                offset,
                expected: 1,
                got: 0,
            }
        } else {
            FramingError::BadLength { index, offset }
        })?;
        if len > max as u64 {
            return Err(FramingError::TooLarge {
                index,
                offset,
                len,
                max,
            });
        }
        let rest = &buf[used..];
        if (rest.len() as u64) < len {
            return Err(FramingError::Truncated {
                index,
                offset,
                expected: len,
                got: rest.len() as u64,
            });
        }
        out.push(&rest[..len as usize]);
        buf = &rest[len as usize..];
        offset += used as u64 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut buf = Vec::new();
        write_delimited(&mut buf, b"hello");
        write_delimited(&mut buf, &vec![7u8; 300]);
        let recs: Vec<_> = DelimitedReader::new(&buf[..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(recs, vec![b"hello".to_vec(), vec![7u8; 300]]);
        assert_eq!(split_delimited(&buf, 1000).unwrap().len(), 2);
        let cut = &buf[..buf.len() - 1];
        let err = DelimitedReader::new(cut)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(
            matches!(err, FramingError::Truncated { index: 1, .. }),
            "{err}"
        );
        assert!(split_delimited(cut, 1000).is_err());
        let err = DelimitedReader::with_limit(&buf[..], 100)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(
            err,
            FramingError::TooLarge {
                index: 1,
                len: 300,
                ..
            }
        ));
    }

    #[test]
    fn reads_the_real_bazel_file_exactly() {
        let bin = include_bytes!("../../../tests/fixtures/bazel-4.2.3/remote-build/bep.bin");
        let recs: Vec<_> = DelimitedReader::new(&bin[..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(recs.len(), 81, "bep.json of the same build has 81 lines");
        let mut again = Vec::new();
        for r in &recs {
            write_delimited(&mut again, r);
        }
        assert_eq!(&again[..], &bin[..]);
    }
}
