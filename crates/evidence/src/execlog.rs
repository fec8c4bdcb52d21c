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

use std::io::{BufReader, Chain, Cursor, Read};

use proof_proto::execlog::{exec_log_entry, ExecLogEntry, SpawnExec};
use proof_stream::delimited::DelimitedReader;
use prost::Message;
use serde::{Deserialize, Serialize};

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
        Spawn {
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

/// Reads a delimited `SpawnExec` stream.
pub struct BinarySpawnReader<R> {
    records: DelimitedReader<R>,
    index: u64,
}

impl<R: Read> BinarySpawnReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            records: DelimitedReader::with_limit(inner, MAX_EXEC_LOG_RECORD),
            index: 0,
        }
    }
}

impl<R: Read> Iterator for BinarySpawnReader<R> {
    type Item = Result<Spawn, EvidenceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.records.next()? {
            Ok(r) => r,
            Err(e) => return Some(Err(EvidenceError::ExecLogFraming(e))),
        };
        let index = self.index;
        self.index = self.index.saturating_add(1);
        Some(
            SpawnExec::decode(record.as_slice())
                .map(Spawn::from)
                .map_err(|source| EvidenceError::BadExecLogRecord {
                    index,
                    message: "tools.protos.SpawnExec",
                    source,
                }),
        )
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
    records: DelimitedReader<R>,
    index: u64,
    invocation: Option<CompactInvocation>,
}

impl<R: Read> EntrySpawnReader<R> {
    pub fn new(decompressed: R) -> Self {
        Self {
            records: DelimitedReader::with_limit(decompressed, MAX_EXEC_LOG_RECORD),
            index: 0,
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
            let record = match self.records.next()? {
                Ok(r) => r,
                Err(e) => {
                    // A zstd error surfaces as an I/O error of the decoder.
                    return Some(Err(match e {
                        proof_stream::delimited::FramingError::Io { source, .. } => {
                            EvidenceError::Zstd(source)
                        }
                        other => EvidenceError::ExecLogFraming(other),
                    }));
                }
            };
            let index = self.index;
            self.index = self.index.saturating_add(1);
            let entry = match ExecLogEntry::decode(record.as_slice()) {
                Ok(e) => e,
                Err(source) => {
                    return Some(Err(EvidenceError::BadExecLogRecord {
                        index,
                        message: "tools.protos.ExecLogEntry",
                        source,
                    }))
                }
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

/// Reads a compact execution log: zstd-decompresses on the fly and yields
/// the spawns.
pub type CompactSpawnReader<R> =
    EntrySpawnReader<zstd::stream::read::Decoder<'static, BufReader<R>>>;

/// Opens a compact (zstd) execution log.
pub fn compact_reader<R: Read>(inner: R) -> Result<CompactSpawnReader<R>, EvidenceError> {
    let decoder = zstd::stream::read::Decoder::new(inner).map_err(EvidenceError::Zstd)?;
    Ok(EntrySpawnReader::new(decoder))
}

type Sniffed<R> = Chain<Cursor<Vec<u8>>, R>;

/// Either execution-log format, detected from the first bytes.
pub enum ExecLogReader<R: Read> {
    Binary(BinarySpawnReader<Sniffed<R>>),
    Compact(CompactSpawnReader<Sniffed<R>>),
}

impl<R: Read> ExecLogReader<R> {
    /// Reads up to four bytes to detect the format, then returns the
    /// matching reader (the bytes read are replayed).
    pub fn open(mut inner: R) -> Result<Self, EvidenceError> {
        let mut head = Vec::with_capacity(4);
        (&mut inner)
            .take(4)
            .read_to_end(&mut head)
            .map_err(EvidenceError::ExecLogIo)?;
        let compact = head.as_slice() == ZSTD_MAGIC;
        let replay = Cursor::new(head).chain(inner);
        if compact {
            Ok(ExecLogReader::Compact(compact_reader(replay)?))
        } else {
            Ok(ExecLogReader::Binary(BinarySpawnReader::new(replay)))
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
