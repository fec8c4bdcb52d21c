//! Decompression bounded relative to its input: a zstd stream may expand to
//! at most [`MAX_RATIO`] times the compressed bytes read so far plus
//! [`FLOOR_BYTES`], and a reader of records from it may yield at most
//! [`RECORDS_FLOOR`] plus [`RECORDS_PER_BYTE`] records per compressed byte.
//! Real Bazel outputs stay far below both (their records carry paths,
//! digests and ids); a few KB of zeros that decompress to 100 MB of empty
//! records do not.

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Most decompressed bytes per compressed byte read.
pub const MAX_RATIO: u64 = 256;
/// Decompressed bytes always allowed, whatever the input size.
pub const FLOOR_BYTES: u64 = 16 << 20;
/// Records always allowed.
pub const RECORDS_FLOOR: u64 = 1 << 16;
/// Records allowed per compressed byte read.
pub const RECORDS_PER_BYTE: u64 = 4;

/// Counts the bytes read through it.
pub struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What a bounded decompression read so far; shared with the record reader.
#[derive(Clone, Debug, Default)]
pub struct Budget {
    compressed: Arc<AtomicU64>,
}

impl Budget {
    /// Compressed bytes read so far.
    pub fn compressed(&self) -> u64 {
        self.compressed.load(Ordering::Relaxed)
    }

    /// Most decompressed bytes allowed now.
    pub fn max_decompressed(&self) -> u64 {
        FLOOR_BYTES.saturating_add(self.compressed().saturating_mul(MAX_RATIO))
    }

    /// Most records allowed now.
    pub fn max_records(&self) -> u64 {
        RECORDS_FLOOR.saturating_add(self.compressed().saturating_mul(RECORDS_PER_BYTE))
    }

    /// The error for `records` records, if that is over the bound.
    pub fn check_records(&self, records: u64) -> io::Result<()> {
        if records <= self.max_records() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{records} records from {} compressed bytes is more than {RECORDS_FLOOR} + \
                 {RECORDS_PER_BYTE} per compressed byte: refused as a decompression bomb",
                self.compressed()
            ),
        ))
    }
}

/// A zstd decoder whose output is bounded by [`Budget::max_decompressed`].
pub struct BoundedZstd<R: Read> {
    decoder: zstd::stream::read::Decoder<'static, BufReader<Counting<R>>>,
    budget: Budget,
    out: u64,
}

impl<R: Read> BoundedZstd<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        let budget = Budget::default();
        let counting = Counting {
            inner,
            count: budget.compressed.clone(),
        };
        Ok(BoundedZstd {
            decoder: zstd::stream::read::Decoder::new(counting)?,
            budget,
            out: 0,
        })
    }

    /// The budget, for a record reader on top.
    pub fn budget(&self) -> Budget {
        self.budget.clone()
    }
}

impl<R: Read> Read for BoundedZstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf)?;
        self.out = self.out.saturating_add(n as u64);
        if self.out > self.budget.max_decompressed() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} compressed bytes decompress to more than {} bytes (at most {MAX_RATIO}x \
                     plus {FLOOR_BYTES}): refused as a decompression bomb",
                    self.budget.compressed(),
                    self.out
                ),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_by_the_input() {
        let zeros = vec![0u8; (FLOOR_BYTES as usize) * 2];
        let z = zstd::encode_all(zeros.as_slice(), 19).unwrap();
        let mut r = BoundedZstd::new(z.as_slice()).unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("decompression bomb"), "{e}");
        assert!((out.len() as u64) <= FLOOR_BYTES + z.len() as u64 * MAX_RATIO);
        // Within the bound: read whole.
        let small = zstd::encode_all(&b"hello world"[..], 3).unwrap();
        let mut out = Vec::new();
        BoundedZstd::new(small.as_slice())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn records_are_bounded_by_the_input() {
        let b = Budget::default();
        assert!(b.check_records(RECORDS_FLOOR).is_ok());
        assert!(b.check_records(RECORDS_FLOOR + 1).is_err());
        b.compressed.store(10, Ordering::Relaxed);
        assert!(b.check_records(RECORDS_FLOOR + 40).is_ok());
        assert!(b.check_records(RECORDS_FLOOR + 41).is_err());
    }
}
