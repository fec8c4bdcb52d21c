//! The ingest pipeline shared by the live BES path and `proof ingest`.
//!
//! Both paths hand the store the same records (one serialized BEP event per
//! sequence number, in order) with the same per-batch flags, and both end in
//! [`finalize`], which derives the invocation's [`Summary`] from the journal
//! and decides whether it is complete. So one build gives one record,
//! whichever way it arrived.
//!
//! Completeness: BuildFinished and `last_message` were seen, and on the live
//! path the ComponentStreamFinished event too. Anything less is incomplete,
//! with the reason.

use std::io::BufRead;

use proof_store::{
    AppendFlags, InvocationMeta, InvocationSource, JournalRecord, RecordKind, Store, StoreError,
};
use proof_stream::bepfile::{BepFileError, BepFileReader, BepFormat, ConversionWarning};
use proof_stream::probe::{probe, Probe};
use proof_stream::summary::{Summary, SummaryBuilder};
use thiserror::Error;

/// A file import hands the store a batch ([`Store::append_unsynced`]) once this many
/// bytes of events have accumulated, and makes everything durable once, at the end
/// ([`Store::sync`]): nothing of a file import is acknowledged to anyone before it
/// finishes (a failed import is deleted again), so one sync weakens nothing. Batches
/// are small so that the memory of one is reused for the next (fresh memory costs a page
/// fault per page, which costs more than the compression of what it holds).
pub const FILE_BATCH_BYTES: usize = 1 << 20;
/// ... or once this many events have accumulated, whichever comes first.
pub const FILE_BATCH_EVENTS: usize = 16 * 1024;

/// Why an ingest failed.
#[derive(Debug, Error)]
pub enum IngestError {
    #[error(transparent)]
    File(#[from] BepFileError),
    #[error("event {index}: not a build_event_stream.BuildEvent ({source}); the input is corrupt or not BEP")]
    NotBep {
        index: u64,
        #[source]
        source: proof_stream::probe::ProbeError,
    },
    #[error("the stream has no BuildStarted event: its first event is {first}; BEP streams start with BuildStarted, so this is not a whole Bazel invocation")]
    NoBuildStarted { first: &'static str },
    #[error("the stream has no events")]
    Empty,
    #[error("invocation {0} is already in the store (`proof show {0}` shows it); a store keeps one record per invocation: import the file into another --store")]
    AlreadyStored(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Flags of one batch, from the probes of its BEP events.
pub fn batch_flags<'a>(
    probes: impl IntoIterator<Item = &'a Probe>,
    stream_finished: bool,
) -> AppendFlags {
    let mut f = AppendFlags {
        saw_stream_finished: stream_finished,
        ..AppendFlags::default()
    };
    for p in probes {
        f.saw_build_finished |= p.build_finished;
        f.saw_last_message |= p.last_message;
    }
    f
}

/// The outcome of [`finalize`].
#[derive(Debug, Clone)]
pub struct Finalized {
    pub invocation_id: String,
    pub complete: bool,
    pub reason: Option<String>,
    pub summary: Summary,
    /// Fields of a JSON file that did not fit the schema and were left out
    /// of their (kept) events; empty for the live path and binary files.
    pub warnings: Vec<ConversionWarning>,
}

/// Why an invocation is incomplete, or `None` when it is complete.
pub fn incomplete_reason(
    summary: &Summary,
    source: InvocationSource,
    stream_finished: bool,
) -> Option<String> {
    let mut missing = Vec::new();
    if summary.invocation_id.is_none() {
        missing.push("BuildStarted");
    }
    if !summary.build_finished {
        missing.push("BuildFinished");
    }
    if !summary.last_message {
        missing.push("an event with last_message");
    }
    if source == InvocationSource::Bes && !stream_finished {
        missing.push("ComponentStreamFinished");
    }
    (!missing.is_empty()).then(|| format!("the stream ended without {}", missing.join(", ")))
}

/// Summarizes an invocation from its journal (one streaming pass).
pub fn summarize(store: &dyn Store, invocation_id: &str) -> Result<(Summary, bool), StoreError> {
    let mut b = SummaryBuilder::new();
    let mut stream_finished = false;
    for rec in store.read(invocation_id)? {
        let rec = rec?;
        match rec.kind {
            RecordKind::BepEvent => b.push(&rec.payload),
            RecordKind::StreamFinished => stream_finished = true,
            RecordKind::Other => {}
        }
    }
    Ok((b.finish(), stream_finished))
}

/// Derives the summary from the journal, decides completeness and records
/// both in the index. No more records are accepted afterwards.
pub fn finalize(store: &dyn Store, invocation_id: &str) -> Result<Finalized, StoreError> {
    let f = conclude(store, invocation_id)?;
    record_outcome(store, &f)?;
    Ok(f)
}

/// The outcome [`finalize`] would record, derived from the journal, without recording it
/// (a server signs the proof first, so a crash in between leaves the invocation to be
/// finalized again rather than finalized without its proof).
pub fn conclude(store: &dyn Store, invocation_id: &str) -> Result<Finalized, StoreError> {
    let source = store
        .get(invocation_id)?
        .ok_or_else(|| StoreError::NotFound(invocation_id.to_string()))?
        .meta
        .source;
    let (summary, stream_finished) = summarize(store, invocation_id)?;
    Ok(conclude_summarized(
        invocation_id,
        source,
        summary,
        stream_finished,
    ))
}

/// [`conclude`] with a summary the caller built over exactly the events it
/// appended (the file import builds it on the way in instead of reading the
/// journal back).
fn conclude_summarized(
    invocation_id: &str,
    source: InvocationSource,
    summary: Summary,
    stream_finished: bool,
) -> Finalized {
    let reason = incomplete_reason(&summary, source, stream_finished);
    Finalized {
        invocation_id: invocation_id.to_string(),
        complete: reason.is_none(),
        reason,
        summary,
        warnings: Vec::new(),
    }
}

/// Records an outcome from [`conclude`] in the index: the invocation is finalized.
pub fn record_outcome(store: &dyn Store, f: &Finalized) -> Result<(), StoreError> {
    let value = serde_json::to_value(&f.summary).expect("a Summary serializes");
    store.mark_complete(&f.invocation_id, f.complete, f.reason.as_deref(), &value)
}

/// Progress of a file import, reported every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub events: u64,
    pub bytes: u64,
}

/// Imports a `--build_event_binary_file` / `--build_event_json_file` (format
/// detected) through the same pipeline as the live path.
///
/// The whole file is validated before anything becomes visible: on any error
/// the half-written invocation is deleted again, so a bad file leaves the
/// store as it was.
pub fn ingest_file(
    store: &dyn Store,
    reader: impl BufRead,
    now_ms: i64,
    progress: impl FnMut(Progress),
) -> Result<(BepFormat, Finalized), IngestError> {
    let limits = (FILE_BATCH_BYTES, FILE_BATCH_EVENTS);
    ingest_file_batched(store, reader, now_ms, progress, limits)
}

/// [`ingest_file`] with the batch limits (bytes, events) as parameters.
fn ingest_file_batched(
    store: &dyn Store,
    reader: impl BufRead,
    now_ms: i64,
    mut progress: impl FnMut(Progress),
    (max_bytes, max_events): (usize, usize),
) -> Result<(BepFormat, Finalized), IngestError> {
    let mut events = BepFileReader::open(reader)?;
    let format = events.format();
    let first = events.next().ok_or(IngestError::Empty)??;
    let p = probe(&first).map_err(|source| IngestError::NotBep { index: 0, source })?;
    let Some(invocation_id) = p.started_uuid.clone() else {
        return Err(IngestError::NoBuildStarted { first: p.kind });
    };
    let meta = InvocationMeta {
        invocation_id: invocation_id.clone(),
        build_id: None,
        source: InvocationSource::File,
        tenant: None,
        instance: None,
        created_at_ms: now_ms,
    };
    if let Some(existing) = store.get(&invocation_id)? {
        // An import that never finished (the process died before it could delete it
        // again) was acknowledged to no one: it is replaced. Anything else stays.
        let unfinished_import =
            existing.meta.source == InvocationSource::File && !existing.state.finalized;
        if !unfinished_import {
            return Err(IngestError::AlreadyStored(invocation_id));
        }
        store.delete(&invocation_id)?;
    }
    store.open_invocation(&meta)?;
    // The summary is built over the very bytes appended, in order: the same
    // summary `finalize` would derive by reading the journal back.
    let mut summary = SummaryBuilder::new();
    let result = (|| {
        let mut seq = 0u64;
        let mut bytes = 0u64;
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        let mut flags = AppendFlags::default();
        let mut pending = Some(Ok(first));
        loop {
            let next = pending.take().or_else(|| events.next());
            let done = next.is_none();
            if let Some(ev) = next {
                let ev = ev?;
                // A JSON file's events are this program's own encoding.
                let p = match format {
                    BepFormat::Json => summary.push_converted(&ev),
                    BepFormat::Binary => summary.push_probed(&ev),
                }
                .map_err(|source| IngestError::NotBep { index: seq, source })?;
                flags.saw_build_finished |= p.build_finished;
                flags.saw_last_message |= p.last_message;
                seq += 1;
                bytes += ev.len() as u64;
                batch_bytes += ev.len();
                batch.push(JournalRecord::bep_event(seq, ev));
            }
            if batch_bytes >= max_bytes || batch.len() >= max_events || (done && !batch.is_empty())
            {
                store.append_unsynced(&invocation_id, &batch, std::mem::take(&mut flags))?;
                batch.clear();
                batch_bytes = 0;
                progress(Progress { events: seq, bytes });
            }
            if done {
                store.sync(&invocation_id)?;
                return Ok(());
            }
        }
    })();
    if let Err(e) = result {
        // Nothing half-written: the import is all or nothing.
        let _ = store.delete(&invocation_id);
        return Err(e);
    }
    let mut fin = conclude_summarized(
        &invocation_id,
        InvocationSource::File,
        summary.finish(),
        false,
    );
    record_outcome(store, &fin)?;
    fin.warnings = events.take_warnings();
    Ok((format, fin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proof_store::FsStore;

    const FIX: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/bazel-4.2.3"
    );

    fn ingest(store: &FsStore, path: &str) -> Result<(BepFormat, Finalized), IngestError> {
        let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        ingest_file(store, f, 1, |_| {})
    }

    #[test]
    fn binary_and_json_files_of_one_build_give_the_same_record() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (sa, sb) = (
            FsStore::open(a.path()).unwrap(),
            FsStore::open(b.path()).unwrap(),
        );
        let (fa, ra) = ingest(&sa, &format!("{FIX}/remote-build/bep.bin")).unwrap();
        let (fb, rb) = ingest(&sb, &format!("{FIX}/remote-build/bep.json")).unwrap();
        assert_eq!((fa, fb), (BepFormat::Binary, BepFormat::Json));
        assert!(
            ra.complete && rb.complete,
            "{:?} {:?}",
            ra.reason,
            rb.reason
        );
        let strip = |s: &Summary| Summary {
            stream_sha256: String::new(),
            ..s.clone()
        };
        // JSON is re-encoded through our schema, so only the stream digest differs.
        assert_eq!(strip(&ra.summary), strip(&rb.summary));
        let bin = std::fs::read(format!("{FIX}/remote-build/bep.bin")).unwrap();
        let stored: Vec<u8> = sa
            .read(&ra.invocation_id)
            .unwrap()
            .flat_map(|r| {
                let mut v = Vec::new();
                proof_stream::delimited::write_delimited(&mut v, &r.unwrap().payload);
                v
            })
            .collect();
        assert_eq!(
            stored, bin,
            "the journal holds the file's events byte for byte"
        );
    }

    #[test]
    fn small_batches_and_one_batch_store_the_same_journal_and_summary() {
        for name in ["bep.bin", "bep.json"] {
            let path = format!("{FIX}/remote-test/{name}");
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (sa, sb) = (
                FsStore::open(a.path()).unwrap(),
                FsStore::open(b.path()).unwrap(),
            );
            let open = || std::io::BufReader::new(std::fs::File::open(&path).unwrap());
            let mut batches = Vec::new();
            let (_, small) =
                ingest_file_batched(&sa, open(), 1, |p| batches.push(p.events), (4096, 7)).unwrap();
            let (_, one) = ingest_file(&sb, open(), 1, |_| {}).unwrap();
            assert!(batches.len() > 5, "{name}: {batches:?}");
            // The summary built on the way in is the one the journal gives.
            let (from_journal, finished) = summarize(&sa, &small.invocation_id).unwrap();
            assert!(!finished);
            assert_eq!(small.summary, from_journal, "{name}");
            assert_eq!(small.summary, one.summary, "{name}");
            assert!(small.complete && one.complete, "{name}");
            let payloads = |s: &FsStore| -> Vec<(u64, Bytes)> {
                s.read(&one.invocation_id)
                    .unwrap()
                    .map(|r| r.map(|r| (r.seq, r.payload)).unwrap())
                    .collect()
            };
            assert_eq!(payloads(&sa), payloads(&sb), "{name}");
            let (ra, rb) = (
                sa.get(&one.invocation_id).unwrap().unwrap(),
                sb.get(&one.invocation_id).unwrap().unwrap(),
            );
            assert_eq!(ra.state.event_count, rb.state.event_count);
            assert!(ra.state.saw_build_finished && ra.state.saw_last_message);
            assert!(rb.state.saw_build_finished && rb.state.saw_last_message);
        }
    }

    #[test]
    fn bad_files_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let bin = std::fs::read(format!("{FIX}/remote-build/bep.bin")).unwrap();
        let cut = &bin[..bin.len() / 2];
        let err = ingest_file(&store, cut, 1, |_| {}).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        // The second event (not BuildStarted) first: no BuildStarted.
        let recs = proof_stream::delimited::split_delimited(&bin, 1 << 20).unwrap();
        let mut no_start = Vec::new();
        for r in &recs[1..] {
            proof_stream::delimited::write_delimited(&mut no_start, r);
        }
        let err = ingest_file(&store, &no_start[..], 1, |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                IngestError::NoBuildStarted {
                    first: "unstructured_command_line"
                }
            ),
            "{err}"
        );
        let err = ingest_file(&store, &b"{\"not\": \"bep\"}\n"[..], 1, |_| {}).unwrap_err();
        assert!(err.to_string().contains("not a BEP event"), "{err}");
        assert!(store.list(&Default::default()).unwrap().is_empty());
        // And a good file after all that still ingests.
        ingest_file(&store, &bin[..], 1, |_| {}).unwrap();
        assert!(matches!(
            ingest_file(&store, &bin[..], 1, |_| {}),
            Err(IngestError::AlreadyStored(_))
        ));
    }

    /// An import cut short by a crash (the invocation open, part of its events written,
    /// never finalized) is replaced by the next import of the file; a finished one or a
    /// streamed one is not.
    #[test]
    fn an_import_cut_short_is_replaced_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let bin = std::fs::read(format!("{FIX}/remote-build/bep.bin")).unwrap();
        let events: Vec<Vec<u8>> = proof_stream::bepfile::BepFileReader::open(&bin[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let id = probe(&events[0]).unwrap().started_uuid.unwrap();
        let partial = |store: &FsStore, source| {
            store
                .open_invocation(&InvocationMeta {
                    invocation_id: id.clone(),
                    build_id: None,
                    source,
                    tenant: None,
                    instance: None,
                    created_at_ms: 1,
                })
                .unwrap();
            let recs = JournalRecord::bep_events(events[..10].iter().cloned());
            store
                .append_unsynced(&id, &recs, AppendFlags::default())
                .unwrap();
        };
        {
            let store = FsStore::open(dir.path()).unwrap();
            partial(&store, InvocationSource::File);
            // The process dies here: no sync, no finalization, no delete.
        }
        let store = FsStore::open(dir.path()).unwrap();
        let (_, fin) = ingest_file(&store, &bin[..], 1, |_| {}).unwrap();
        assert!(fin.complete, "{:?}", fin.reason);
        assert_eq!(fin.summary.event_count, events.len() as u64);
        let stored: Vec<Vec<u8>> = store
            .read(&id)
            .unwrap()
            .map(|r| r.unwrap().payload.to_vec())
            .collect();
        assert_eq!(stored, events);
        // Finished: the next import of the same file is refused.
        assert!(matches!(
            ingest_file(&store, &bin[..], 1, |_| {}),
            Err(IngestError::AlreadyStored(_))
        ));
        // A live stream cut short is the server's to finish or expire, not an import's.
        let other = tempfile::tempdir().unwrap();
        let store = FsStore::open(other.path()).unwrap();
        partial(&store, InvocationSource::Bes);
        assert!(matches!(
            ingest_file(&store, &bin[..], 1, |_| {}),
            Err(IngestError::AlreadyStored(_))
        ));
        assert_eq!(store.state(&id).unwrap().unwrap().last_seq, 10);
    }

    /// Issue #9: a real Bazel 8.3.1 JSON file (MissReason by name) ingests
    /// whole; a copy with a mistyped field ingests whole too, with the field
    /// named in `Finalized::warnings`, and its journal holds every event.
    #[test]
    fn json_fields_that_do_not_fit_are_warnings_not_a_failed_ingest() {
        let real = proof_fixtures::real_file("bazel-8.3.1-remote/bep.ndjson")
            .display()
            .to_string();
        let text = std::fs::read_to_string(&real).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let (_, fin) = ingest(&store, &real).unwrap();
        assert!(
            fin.complete && fin.warnings.is_empty(),
            "{:?}",
            fin.warnings
        );
        assert_eq!(fin.summary.event_count, 111);

        let bad = text.replacen(
            "\"exitCode\":{\"name\":\"SUCCESS\"",
            "\"exitCode\":{\"name\":\"SUCCESS\",\"code\":\"zero\"",
            1,
        );
        assert_ne!(bad, text);
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let (_, fin) = ingest_file(&store, bad.as_bytes(), 1, |_| {}).unwrap();
        assert!(fin.complete, "{:?}", fin.reason);
        assert_eq!(fin.summary.event_count, 111);
        assert_eq!(store.read(&fin.invocation_id).unwrap().count(), 111);
        let w: Vec<_> = fin.warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(w, ["finished.exitCode.code"], "{:?}", fin.warnings);
        // The exit code's name survives; its number is left out (0).
        assert_eq!(fin.summary.exit_code.as_ref().unwrap().name, "SUCCESS");
    }

    #[test]
    fn a_file_without_build_finished_is_incomplete_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let bin = std::fs::read(format!("{FIX}/remote-build/bep.bin")).unwrap();
        let recs = proof_stream::delimited::split_delimited(&bin, 1 << 20).unwrap();
        let mut head = Vec::new();
        for r in &recs[..40] {
            proof_stream::delimited::write_delimited(&mut head, r);
        }
        let (_, fin) = ingest_file(&store, &head[..], 1, |_| {}).unwrap();
        assert!(!fin.complete);
        assert_eq!(
            fin.reason.as_deref(),
            Some("the stream ended without BuildFinished, an event with last_message")
        );
        let rec = store.get(&fin.invocation_id).unwrap().unwrap();
        assert!(rec.state.finalized && !rec.state.complete);
    }
}
