//! One streaming pass over an execution log (binary `SpawnExec` or compact
//! zstd `ExecLogEntry`), keeping what the KPIs need beyond
//! `proof_evidence`'s spawn view: per-spawn start times, input bytes and the
//! outputs each action produced.
//!
//! Only one record is held at a time, plus (compact format only) a map from
//! file/directory entry id to a short fingerprint, because a spawn names its
//! outputs by the id of an earlier entry.

use std::collections::HashMap;
use std::io::Read;

use proof_evidence::execlog::{ExecLogFormat, ExecLogRecord, ExecLogRecords};
use proof_proto::execlog::{exec_log_entry, SpawnExec, SpawnMetrics};
use sha2::{Digest as _, Sha256};

use crate::KpiError;

/// What one logged spawn contributes to the KPIs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpawnFacts {
    pub runner: String,
    pub cache_hit: bool,
    pub exit_code: i32,
    pub status: String,
    pub mnemonic: String,
    pub target_label: String,
    /// `hash/size_bytes` of the action digest, when logged.
    pub action_digest: Option<String>,
    /// Unix milliseconds of `SpawnMetrics.start_time` (newest Bazel only).
    pub start_ms: Option<i64>,
    /// Whether the spawn carried `SpawnMetrics` at all.
    pub has_metrics: bool,
    pub total_ms: u64,
    pub queue_ms: u64,
    pub fetch_ms: u64,
    pub upload_ms: u64,
    pub execution_wall_ms: u64,
    pub setup_ms: u64,
    pub network_ms: u64,
    /// `SpawnMetrics.input_bytes`/`input_files` (0 when not filled).
    pub metric_input_bytes: u64,
    pub metric_input_files: u64,
    /// Sum of the input file digest sizes listed in a binary log (`None`
    /// for compact logs, which list inputs by reference).
    pub listed_input_bytes: Option<u64>,
    pub listed_input_files: Option<u64>,
    /// Sum of output sizes and a fingerprint over (path, digest) of every
    /// output, when the log gives the outputs' digests.
    pub output_bytes: Option<u64>,
    pub outputs_fingerprint: Option<String>,
}

fn duration_ms(d: Option<&prost_types::Duration>) -> u64 {
    let Some(d) = d else { return 0 };
    let ms = i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000;
    u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
}

fn timestamp_ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    let t = t?;
    if t.seconds == 0 && t.nanos == 0 {
        return None;
    }
    let ms = i128::from(t.seconds) * 1000 + i128::from(t.nanos) / 1_000_000;
    i64::try_from(ms).ok()
}

fn apply_metrics(f: &mut SpawnFacts, m: Option<&SpawnMetrics>) {
    let Some(m) = m else { return };
    f.has_metrics = true;
    f.start_ms = timestamp_ms(m.start_time.as_ref());
    f.total_ms = duration_ms(m.total_time.as_ref());
    f.queue_ms = duration_ms(m.queue_time.as_ref());
    f.fetch_ms = duration_ms(m.fetch_time.as_ref());
    f.upload_ms = duration_ms(m.upload_time.as_ref());
    f.execution_wall_ms = duration_ms(m.execution_wall_time.as_ref());
    f.setup_ms = duration_ms(m.setup_time.as_ref());
    f.network_ms = duration_ms(m.network_time.as_ref());
    f.metric_input_bytes = u64::try_from(m.input_bytes).unwrap_or(0);
    f.metric_input_files = u64::try_from(m.input_files).unwrap_or(0);
}

fn digest_key(d: Option<&proof_proto::execlog::Digest>) -> Option<String> {
    d.filter(|d| !d.hash.is_empty())
        .map(|d| format!("{}/{}", d.hash, d.size_bytes))
}

/// A 16-hex-digit fingerprint over sorted output lines.
fn fingerprint(mut lines: Vec<String>) -> String {
    lines.sort_unstable();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

impl From<SpawnExec> for SpawnFacts {
    fn from(s: SpawnExec) -> Self {
        let mut f = SpawnFacts {
            runner: s.runner,
            cache_hit: s.cache_hit,
            exit_code: s.exit_code,
            status: s.status,
            mnemonic: s.mnemonic,
            target_label: s.target_label,
            action_digest: digest_key(s.digest.as_ref()),
            ..SpawnFacts::default()
        };
        apply_metrics(&mut f, s.metrics.as_ref());
        let mut bytes = 0u64;
        let mut files = 0u64;
        for i in &s.inputs {
            files += 1;
            bytes = bytes.saturating_add(
                i.digest
                    .as_ref()
                    .map_or(0, |d| u64::try_from(d.size_bytes).unwrap_or(0)),
            );
        }
        f.listed_input_bytes = Some(bytes);
        f.listed_input_files = Some(files);
        if !s.actual_outputs.is_empty() {
            let mut out_bytes = 0u64;
            let mut lines = Vec::with_capacity(s.actual_outputs.len());
            for o in &s.actual_outputs {
                let (hash, size) = o
                    .digest
                    .as_ref()
                    .map_or((String::new(), 0), |d| (d.hash.clone(), d.size_bytes));
                out_bytes = out_bytes.saturating_add(u64::try_from(size).unwrap_or(0));
                lines.push(format!("{}\0{hash}\0{size}", o.path));
            }
            f.output_bytes = Some(out_bytes);
            f.outputs_fingerprint = Some(fingerprint(lines));
        }
        f
    }
}

/// Compact-log entries a spawn may name as an output: line for the
/// fingerprint and size.
type OutputIndex = HashMap<u32, (String, u64)>;

fn compact_spawn(s: exec_log_entry::Spawn, index: &OutputIndex) -> SpawnFacts {
    let mut f = SpawnFacts {
        runner: s.runner,
        cache_hit: s.cache_hit,
        exit_code: s.exit_code,
        status: s.status,
        mnemonic: s.mnemonic,
        target_label: s.target_label,
        action_digest: digest_key(s.digest.as_ref()),
        ..SpawnFacts::default()
    };
    apply_metrics(&mut f, s.metrics.as_ref());
    let mut lines = Vec::new();
    let mut bytes = 0u64;
    let mut complete = !s.outputs.is_empty();
    for o in &s.outputs {
        match &o.r#type {
            Some(exec_log_entry::output::Type::OutputId(id)) => match index.get(id) {
                Some((line, size)) => {
                    lines.push(line.clone());
                    bytes = bytes.saturating_add(*size);
                }
                None => complete = false,
            },
            Some(exec_log_entry::output::Type::InvalidOutputPath(p)) => {
                lines.push(format!("{p}\0missing"));
            }
            None => complete = false,
        }
    }
    if complete {
        f.output_bytes = Some(bytes);
        f.outputs_fingerprint = Some(fingerprint(lines));
    }
    f
}

fn file_line(path: &str, d: Option<&proof_proto::execlog::Digest>) -> (String, u64) {
    let (hash, size) = d.map_or((String::new(), 0), |d| (d.hash.clone(), d.size_bytes));
    (
        format!("{path}\0{hash}\0{size}"),
        u64::try_from(size).unwrap_or(0),
    )
}

/// Streams [`SpawnFacts`] out of either execution-log format; the format
/// detection, decompression and decoding are `proof_evidence`'s.
pub struct SpawnFactsReader<R: Read> {
    records: ExecLogRecords<R>,
    /// Compact format: entry id → (fingerprint line, size) of files and
    /// directories a later spawn may name as outputs.
    index: OutputIndex,
    /// The compact log's invocation id, once read.
    pub invocation_id: Option<String>,
}

impl<R: Read> SpawnFactsReader<R> {
    /// Detects the format from the zstd magic and starts reading.
    pub fn open(inner: R) -> Result<Self, KpiError> {
        Ok(SpawnFactsReader {
            records: ExecLogRecords::open(inner)?,
            index: HashMap::new(),
            invocation_id: None,
        })
    }

    /// True for the compact (zstd) format.
    pub fn is_compact(&self) -> bool {
        self.records.format() == ExecLogFormat::Compact
    }
}

impl<R: Read> Iterator for SpawnFactsReader<R> {
    type Item = Result<SpawnFacts, KpiError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.records.next()? {
                Ok(ExecLogRecord::Spawn(s)) => return Some(Ok(SpawnFacts::from(s))),
                Ok(ExecLogRecord::Entry(e)) => e,
                Err(e) => return Some(Err(e.into())),
            };
            use exec_log_entry::Type as T;
            let index = &mut self.index;
            match entry.r#type {
                Some(T::Spawn(s)) => return Some(Ok(compact_spawn(s, index))),
                Some(T::Invocation(inv)) if !inv.id.is_empty() => {
                    self.invocation_id = Some(inv.id);
                }
                Some(T::File(f)) if entry.id != 0 => {
                    index.insert(entry.id, file_line(&f.path, f.digest.as_ref()));
                }
                Some(T::Directory(d)) if entry.id != 0 => {
                    let mut size = 0u64;
                    let lines: Vec<String> = d
                        .files
                        .iter()
                        .map(|f| {
                            let (l, s) = file_line(&f.path, f.digest.as_ref());
                            size = size.saturating_add(s);
                            l
                        })
                        .collect();
                    index.insert(
                        entry.id,
                        (format!("{}\0dir\0{}", d.path, fingerprint(lines)), size),
                    );
                }
                Some(T::UnresolvedSymlink(l)) if entry.id != 0 => {
                    index.insert(
                        entry.id,
                        (format!("{}\0symlink\0{}", l.path, l.target_path), 0),
                    );
                }
                _ => {}
            }
        }
    }
}
