//! Streaming readers for Bazel's execution logs, yielding one [`Spawn`] view
//! per logged spawn:
//!
//! - [`BinarySpawnReader`]: `--execution_log_binary_file`, varint-delimited
//!   `tools.protos.SpawnExec` (Bazel 4.x and later);
//! - [`CompactSpawnReader`]: `--execution_log_compact_file` (7.1+), one zstd
//!   stream over varint-delimited `tools.protos.ExecLogEntry` records;
//! - [`ExecLogReader::open`]: detects the format from the zstd magic
//!   `28 B5 2F FD` (a SpawnExec stream cannot start with it: 0xB5 would be
//!   field 22, which SpawnExec does not have).
//!
//! Only one record is held at a time. Records larger than
//! [`MAX_EXEC_LOG_RECORD`] are refused instead of allocated.

use std::io::{Chain, Cursor, Read};

use proof_proto::execlog::{exec_log_entry, ExecLogEntry, SpawnExec};
use proof_stream::delimited::DelimitedReader;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::bounded::BoundedZstd;
use crate::EvidenceError;

/// Largest single execution-log record accepted.
pub const MAX_EXEC_LOG_RECORD: usize = 32 * 1024 * 1024;

/// The first four bytes of a zstd frame.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Which execution-log format was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecLogFormat {
    /// Delimited `SpawnExec` (`--execution_log_binary_file`).
    Binary,
    /// zstd-compressed delimited `ExecLogEntry` (`--execution_log_compact_file`).
    Compact,
}

/// An action digest (the action-cache key of a spawn).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionDigest {
    /// Lower-case hex hash.
    pub hash: String,
    pub size_bytes: i64,
}

/// Spawn timings in whole milliseconds (negative durations count as 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnTimes {
    pub total_ms: u64,
    pub queue_ms: u64,
    pub fetch_ms: u64,
    pub upload_ms: u64,
    pub execution_wall_ms: u64,
    pub setup_ms: u64,
    pub network_ms: u64,
}

/// The format-independent view of one logged spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    /// Runner name, e.g. "remote", "remote cache hit", "linux-sandbox".
    pub runner: String,
    /// True for a remote or disk cache hit (`remote_cache_hit`/`cache_hit`).
    pub cache_hit: bool,
    /// Whether the spawn was allowed to run remotely.
    pub remotable: bool,
    /// Platform properties in log order (name, value).
    pub platform: Vec<(String, String)>,
    pub target_label: String,
    pub mnemonic: String,
    pub exit_code: i32,
    /// Empty on success.
    pub status: String,
    /// Absent in 4.x logs and when no cache/executor was configured.
    pub digest: Option<ActionDigest>,
    /// Absent in 4.x logs.
    pub metrics: Option<SpawnTimes>,
    /// `actual_outputs` (path, sha256, size) of a binary log's SpawnExec;
    /// `None` for the compact log (it names outputs by file id).
    pub outputs: Option<Vec<(String, String, i64)>>,
    /// The first actual output's path, else the first listed output's.
    pub first_output: Option<String>,
}

impl Spawn {
    /// The value of the last platform property named `name`.
    pub fn platform_property(&self, name: &str) -> Option<&str> {
        self.platform
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn duration_ms(d: Option<&prost_types::Duration>) -> u64 {
    let Some(d) = d else { return 0 };
    let ms = i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000;
    u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
}

fn times(m: Option<&proof_proto::execlog::SpawnMetrics>) -> Option<SpawnTimes> {
    let m = m?;
    Some(SpawnTimes {
        total_ms: duration_ms(m.total_time.as_ref()),
        queue_ms: duration_ms(m.queue_time.as_ref()),
        fetch_ms: duration_ms(m.fetch_time.as_ref()),
        upload_ms: duration_ms(m.upload_time.as_ref()),
        execution_wall_ms: duration_ms(m.execution_wall_time.as_ref()),
        setup_ms: duration_ms(m.setup_time.as_ref()),
        network_ms: duration_ms(m.network_time.as_ref()),
    })
}

fn digest(d: Option<proof_proto::execlog::Digest>) -> Option<ActionDigest> {
    d.filter(|d| !d.hash.is_empty()).map(|d| ActionDigest {
        hash: d.hash,
        size_bytes: d.size_bytes,
    })
}

fn platform(p: Option<proof_proto::execlog::Platform>) -> Vec<(String, String)> {
    p.map(|p| {
        p.properties
            .into_iter()
            .map(|prop| (prop.name, prop.value))
            .collect()
    })
    .unwrap_or_default()
}

impl From<SpawnExec> for Spawn {
    fn from(s: SpawnExec) -> Self {
        let outputs: Vec<(String, String, i64)> = s
            .actual_outputs
            .iter()
            .map(|f| {
                let d = f.digest.clone().unwrap_or_default();
                (f.path.clone(), d.hash, d.size_bytes)
            })
            .collect();
        let first_output = outputs
            .first()
            .map(|o| o.0.clone())
            .or_else(|| s.listed_outputs.first().cloned());
        Spawn {
            outputs: Some(outputs),
            first_output,
            metrics: times(s.metrics.as_ref()),
            runner: s.runner,
            cache_hit: s.cache_hit,
            remotable: s.remotable,
            platform: platform(s.platform),
            target_label: s.target_label,
            mnemonic: s.mnemonic,
            exit_code: s.exit_code,
            status: s.status,
            digest: digest(s.digest),
        }
    }
}

impl From<exec_log_entry::Spawn> for Spawn {
    fn from(s: exec_log_entry::Spawn) -> Self {
        Spawn {
            outputs: None,
            first_output: None,
            metrics: times(s.metrics.as_ref()),
            runner: s.runner,
            cache_hit: s.cache_hit,
            remotable: s.remotable,
            platform: platform(s.platform),
            target_label: s.target_label,
            mnemonic: s.mnemonic,
            exit_code: s.exit_code,
            status: s.status,
            digest: digest(s.digest),
        }
    }
}

/// Framing and protobuf decoding of one record type: the part every reader
/// here shares. A zstd error surfaces as an I/O error of the decoder.
struct Decoded<R, M> {
    records: DelimitedReader<R>,
    index: u64,
    message: &'static str,
    /// Read errors come from the zstd decoder.
    compressed: bool,
    /// The bounded decompression's budget: records are bounded too.
    budget: Option<crate::bounded::Budget>,
    _m: std::marker::PhantomData<fn() -> M>,
}

impl<R: Read, M> Decoded<R, M> {
    fn new(inner: R, message: &'static str, compressed: bool) -> Self {
        Self {
            records: DelimitedReader::with_limit(inner, MAX_EXEC_LOG_RECORD),
            index: 0,
            message,
            compressed,
            budget: None,
            _m: std::marker::PhantomData,
        }
    }

    fn with_budget(mut self, budget: crate::bounded::Budget) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl<R: Read, M: Message + Default> Iterator for Decoded<R, M> {
    type Item = Result<M, EvidenceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.records.next()? {
            Ok(r) => r,
            Err(proof_stream::delimited::FramingError::Io { source, .. }) => {
                return Some(Err(if self.compressed {
                    EvidenceError::Zstd(source)
                } else {
                    EvidenceError::ExecLogIo(source)
                }))
            }
            Err(e) => return Some(Err(EvidenceError::ExecLogFraming(e))),
        };
        let index = self.index;
        self.index = self.index.saturating_add(1);
        if let Some(b) = &self.budget {
            if let Err(e) = b.check_records(self.index) {
                return Some(Err(EvidenceError::Zstd(e)));
            }
        }
        Some(
            M::decode(record.as_slice()).map_err(|source| EvidenceError::BadExecLogRecord {
                index,
                message: self.message,
                source,
            }),
        )
    }
}

/// Reads a delimited `SpawnExec` stream.
pub struct BinarySpawnReader<R> {
    inner: Decoded<R, SpawnExec>,
}

impl<R: Read> BinarySpawnReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner: Decoded::new(inner, "tools.protos.SpawnExec", false),
        }
    }
}

impl<R: Read> Iterator for BinarySpawnReader<R> {
    type Item = Result<Spawn, EvidenceError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.inner.next()?.map(Spawn::from))
    }
}

/// What the compact log's `Invocation` entry says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactInvocation {
    pub hash_function_name: String,
    /// The invocation UUID (newest Bazel only; empty otherwise).
    pub id: String,
}

/// Reads the records of an already decompressed `ExecLogEntry` stream,
/// yielding only spawns; see [`CompactSpawnReader`] for the zstd file.
pub struct EntrySpawnReader<R> {
    inner: Decoded<R, ExecLogEntry>,
    invocation: Option<CompactInvocation>,
}

impl<R: Read> EntrySpawnReader<R> {
    pub fn new(decompressed: R) -> Self {
        Self {
            inner: Decoded::new(decompressed, "tools.protos.ExecLogEntry", true),
            invocation: None,
        }
    }

    fn bounded(decompressed: R, budget: crate::bounded::Budget) -> Self {
        Self {
            inner: Decoded::new(decompressed, "tools.protos.ExecLogEntry", true)
                .with_budget(budget),
            invocation: None,
        }
    }

    /// The `Invocation` entry, once it was read (it is the first entry).
    pub fn invocation(&self) -> Option<&CompactInvocation> {
        self.invocation.as_ref()
    }
}

impl<R: Read> Iterator for EntrySpawnReader<R> {
    type Item = Result<Spawn, EvidenceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.inner.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            match entry.r#type {
                Some(exec_log_entry::Type::Spawn(s)) => return Some(Ok(Spawn::from(s))),
                Some(exec_log_entry::Type::Invocation(inv)) => {
                    self.invocation = Some(CompactInvocation {
                        hash_function_name: inv.hash_function_name,
                        id: inv.id,
                    });
                }
                _ => {}
            }
        }
    }
}

/// Reads a compact execution log: zstd-decompresses on the fly, bounded
/// relative to the input ([`crate::bounded`]), and yields the spawns.
pub type CompactSpawnReader<R> = EntrySpawnReader<BoundedZstd<R>>;

/// Opens a compact (zstd) execution log.
pub fn compact_reader<R: Read>(inner: R) -> Result<CompactSpawnReader<R>, EvidenceError> {
    let decoder = BoundedZstd::new(inner).map_err(EvidenceError::Zstd)?;
    let budget = decoder.budget();
    Ok(EntrySpawnReader::bounded(decoder, budget))
}

type Sniffed<R> = Chain<Cursor<Vec<u8>>, R>;

/// Reads up to four bytes to detect the format; the bytes read are replayed.
fn sniff<R: Read>(mut inner: R) -> Result<(ExecLogFormat, Sniffed<R>), EvidenceError> {
    let mut head = Vec::with_capacity(4);
    (&mut inner)
        .take(4)
        .read_to_end(&mut head)
        .map_err(EvidenceError::ExecLogIo)?;
    let format = if head.as_slice() == ZSTD_MAGIC {
        ExecLogFormat::Compact
    } else {
        ExecLogFormat::Binary
    };
    Ok((format, Cursor::new(head).chain(inner)))
}

/// One decoded record of either execution-log format: for readers that need
/// more of a record than the [`Spawn`] view (e.g. outputs, for KPIs).
#[derive(Debug)]
pub enum ExecLogRecord {
    /// A binary log's `SpawnExec`.
    Spawn(SpawnExec),
    /// A compact log's `ExecLogEntry` (spawns, files, directories, ...).
    Entry(ExecLogEntry),
}

enum RecordsInner<R: Read> {
    Binary(Decoded<Sniffed<R>, SpawnExec>),
    Compact(Decoded<BoundedZstd<Sniffed<R>>, ExecLogEntry>),
}

/// Every record of either execution-log format, detected from the first
/// bytes, decompressed and decoded one at a time.
pub struct ExecLogRecords<R: Read> {
    inner: RecordsInner<R>,
}

impl<R: Read> ExecLogRecords<R> {
    pub fn open(inner: R) -> Result<Self, EvidenceError> {
        let (format, replay) = sniff(inner)?;
        let inner = match format {
            ExecLogFormat::Binary => {
                RecordsInner::Binary(Decoded::new(replay, "tools.protos.SpawnExec", false))
            }
            ExecLogFormat::Compact => {
                let decoder = BoundedZstd::new(replay).map_err(EvidenceError::Zstd)?;
                let budget = decoder.budget();
                RecordsInner::Compact(
                    Decoded::new(decoder, "tools.protos.ExecLogEntry", true).with_budget(budget),
                )
            }
        };
        Ok(Self { inner })
    }

    pub fn format(&self) -> ExecLogFormat {
        match self.inner {
            RecordsInner::Binary(_) => ExecLogFormat::Binary,
            RecordsInner::Compact(_) => ExecLogFormat::Compact,
        }
    }
}

impl<R: Read> Iterator for ExecLogRecords<R> {
    type Item = Result<ExecLogRecord, EvidenceError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match &mut self.inner {
            RecordsInner::Binary(d) => d.next()?.map(ExecLogRecord::Spawn),
            RecordsInner::Compact(d) => d.next()?.map(ExecLogRecord::Entry),
        })
    }
}

/// Either execution-log format, detected from the first bytes.
pub enum ExecLogReader<R: Read> {
    Binary(BinarySpawnReader<Sniffed<R>>),
    Compact(CompactSpawnReader<Sniffed<R>>),
}

impl<R: Read> ExecLogReader<R> {
    /// Reads up to four bytes to detect the format, then returns the
    /// matching reader (the bytes read are replayed).
    pub fn open(inner: R) -> Result<Self, EvidenceError> {
        let (format, replay) = sniff(inner)?;
        match format {
            ExecLogFormat::Compact => Ok(ExecLogReader::Compact(compact_reader(replay)?)),
            ExecLogFormat::Binary => Ok(ExecLogReader::Binary(BinarySpawnReader::new(replay))),
        }
    }

    pub fn format(&self) -> ExecLogFormat {
        match self {
            ExecLogReader::Binary(_) => ExecLogFormat::Binary,
            ExecLogReader::Compact(_) => ExecLogFormat::Compact,
        }
    }

    /// The compact log's `Invocation` entry, once read (binary logs have none).
    pub fn invocation(&self) -> Option<&CompactInvocation> {
        match self {
            ExecLogReader::Binary(_) => None,
            ExecLogReader::Compact(r) => r.invocation(),
        }
    }
}

impl<R: Read> Iterator for ExecLogReader<R> {
    type Item = Result<Spawn, EvidenceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ExecLogReader::Binary(r) => r.next(),
            ExecLogReader::Compact(r) => r.next(),
        }
    }
}
