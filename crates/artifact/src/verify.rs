//! Verification of an artifact: layout, signature, digests, re-derivation,
//! then policy, each reported as a named [`Check`].

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use proof_evidence::{bounded, Evidence, EvidenceBuilder, EvidenceError};
use proof_stream::delimited::{decode_varint, DelimitedReader, DEFAULT_MAX_RECORD};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::dsse::Envelope;
use crate::hashio::HashReader;
pub use crate::policy::Check;
use crate::policy::Policy;
use crate::statement::Statement;
use crate::tar::{
    scan_tapped, Member, Scanned, Tap, TarError, CORROBORATION, EVENTS, EXECLOG, EXECUTOR, GRPCLOG,
    ORIGIN, STATEMENT,
};

/// Names of the integrity checks, in report order (policy checks follow).
pub const INTEGRITY_CHECKS: [&str; 4] = ["envelope", "signature", "digests", "rederived"];

/// The outcome of verifying one artifact.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every check passed.
    pub ok: bool,
    /// `envelope`, `signature`, `digests`, `rederived`, then the policy's
    /// checks, in that order.
    pub checks: Vec<Check>,
    /// The re-derived evidence, present when `rederived` passed.
    pub evidence: Option<Evidence>,
    /// Lowercase hex SHA-256 of the artifact file.
    pub artifact_sha256: String,
}

impl Report {
    /// The check called `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The first failed check.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }
}

/// The artifact could not be read at all (distinct from a failed check).
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("cannot open the artifact {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a regular file; pass the path of a .proof.tar artifact", .0.display())]
    NotAFile(PathBuf),
    #[error("reading the artifact failed: {0}")]
    Io(#[from] io::Error),
}

/// Verifies the artifact file at `path`.
pub fn verify_path(
    path: &Path,
    trusted: &[VerifyingKey],
    policy: &Policy,
) -> Result<Report, VerifyError> {
    let open_err = |source| VerifyError::Open {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(open_err)?;
    if !meta.is_file() {
        return Err(VerifyError::NotAFile(path.to_path_buf()));
    }
    let file = File::open(path).map_err(open_err)?;
    verify(file, trusted, policy)
}

/// Verifies an artifact read from `input`, streamed: nothing but the
/// statement and summary is held in memory. One sequential pass checks the
/// layout and digests and, once the statement's signature is known to be
/// good, decompresses the events member and re-derives the evidence from the
/// very bytes it hashes; the exec-log and other evidence members are read
/// again afterwards. (Should the one-pass derivation stop at anything
/// unusual, the events member is read again the plain way, which gives the
/// exact diagnostics.)
pub fn verify<R: Read + Seek>(
    mut input: R,
    trusted: &[VerifyingKey],
    policy: &Policy,
) -> Result<Report, VerifyError> {
    let mut checks: Vec<Check> = Vec::new();
    input.seek(SeekFrom::Start(0))?;
    let mut tap = EventsTap {
        trusted,
        decoding: None,
        done: None,
    };
    let scanned = match scan_tapped(BufReader::with_capacity(256 * 1024, &mut input), &mut tap) {
        Ok(s) => Ok(s),
        Err(TarError::Io(e)) => return Err(VerifyError::Io(e)),
        Err(TarError::Layout(msg)) => Err(msg),
    };
    let artifact_sha256 = match &scanned {
        Ok(s) => hex::encode(s.sha256),
        Err(_) => {
            input.seek(SeekFrom::Start(0))?;
            let mut h = Sha256::new();
            io::copy(&mut input, &mut h)?;
            hex::encode(h.finalize())
        }
    };

    let mut evidence = None;
    let derived_events = tap.done.take();
    let outcome = integrity(
        &mut input,
        scanned,
        trusted,
        derived_events,
        &mut checks,
        &mut evidence,
    );
    if let Err(e) = outcome {
        return Err(VerifyError::Io(e));
    }
    // Fill in the integrity checks that were not reached.
    let failed = checks.iter().find(|c| !c.ok).map(|c| c.name.clone());
    for name in INTEGRITY_CHECKS.iter().skip(checks.len()) {
        let earlier = failed.clone().unwrap_or_default();
        checks.push(Check::new(
            name,
            false,
            format!("not checked: {earlier} failed"),
        ));
    }
    match (&evidence, checks.iter().find(|c| !c.ok)) {
        (Some(ev), None) => checks.extend(policy.evaluate(ev)),
        (_, first) => {
            let earlier = first.map_or("rederived", |c| c.name.as_str()).to_string();
            for c in policy.checks_for(None) {
                checks.push(Check::new(
                    c.name(),
                    false,
                    format!("not checked: {earlier} failed"),
                ));
            }
        }
    }
    Ok(Report {
        ok: checks.iter().all(|c| c.ok),
        checks,
        evidence,
        artifact_sha256,
    })
}

/// Runs the four integrity checks, pushing each result; stops at the first
/// failure. Err only for I/O errors of the underlying input.
fn integrity<R: Read + Seek>(
    input: &mut R,
    scanned: Result<Scanned, String>,
    trusted: &[VerifyingKey],
    derived_events: Option<EvidenceBuilder>,
    checks: &mut Vec<Check>,
    evidence: &mut Option<Evidence>,
) -> io::Result<()> {
    // envelope
    let scanned = match scanned {
        Ok(s) => s,
        Err(msg) => {
            checks.push(Check::new("envelope", false, msg));
            return Ok(());
        }
    };
    let envelope = match Envelope::parse(&scanned.statement) {
        Ok(e) => e,
        Err(e) => {
            checks.push(Check::new("envelope", false, format!("{STATEMENT}: {e}")));
            return Ok(());
        }
    };
    checks.push(Check::new(
        "envelope",
        true,
        format!(
            "canonical tar with {} members; DSSE envelope of {} with {} signature(s)",
            scanned.members.len(),
            envelope.payload_type,
            envelope.signatures.len()
        ),
    ));

    // signature
    match envelope.verify(trusted) {
        Ok(keyid) => checks.push(Check::new(
            "signature",
            true,
            format!("ed25519 signature by trusted key {keyid}"),
        )),
        Err(msg) => {
            checks.push(Check::new("signature", false, msg));
            return Ok(());
        }
    }

    // digests
    let statement = match Statement::parse(&envelope.payload) {
        Ok(s) => s,
        Err(msg) => {
            checks.push(Check::new("digests", false, msg));
            return Ok(());
        }
    };
    let members: Vec<&Member> = scanned
        .members
        .iter()
        .filter(|m| m.name != STATEMENT)
        .collect();
    if let Err(msg) = compare_subjects(&statement, &members) {
        checks.push(Check::new("digests", false, msg));
        return Ok(());
    }
    checks.push(Check::new(
        "digests",
        true,
        format!("{} members match the signed sha256 digests", members.len()),
    ));

    // rederived
    match rederive(input, &scanned, derived_events) {
        Ok(Ok(ev)) => {
            let mut derived = serde_json::to_value(&ev).map_err(io::Error::other)?;
            crate::outputs_bound::signed_before_binding(&mut derived, &statement.predicate);
            if derived == statement.predicate {
                checks.push(Check::new(
                    "rederived",
                    true,
                    format!(
                        "evidence re-derived from {} BEP events equals the signed predicate",
                        ev.event_count
                    ),
                ));
                *evidence = Some(ev);
            } else {
                checks.push(Check::new(
                    "rederived",
                    false,
                    differences(&derived, &statement.predicate),
                ));
            }
        }
        Ok(Err(msg)) => checks.push(Check::new("rederived", false, msg)),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn compare_subjects(statement: &Statement, members: &[&Member]) -> Result<(), String> {
    for m in members {
        let want = hex::encode(m.sha256);
        match statement.subject.iter().find(|s| s.name == m.name) {
            None => {
                return Err(format!(
                    "member {} is not a subject of the signed statement",
                    m.name
                ))
            }
            Some(s) if s.digest.sha256 != want => {
                return Err(format!(
                    "member {} has sha256 {want} but the signed statement says {}",
                    m.name, s.digest.sha256
                ))
            }
            Some(_) => {}
        }
    }
    let names: Vec<&str> = statement.subject.iter().map(|s| s.name.as_str()).collect();
    let expected: Vec<&str> = members.iter().map(|m| m.name).collect();
    if names != expected {
        return Err(format!(
            "the signed subjects are [{}] but the artifact's members are [{}]",
            names.join(", "),
            expected.join(", ")
        ));
    }
    Ok(())
}

/// Top-level fields whose values differ.
fn differences(derived: &serde_json::Value, signed: &serde_json::Value) -> String {
    let (Some(d), Some(s)) = (derived.as_object(), signed.as_object()) else {
        return "the signed predicate is not a JSON object".to_string();
    };
    let mut keys: Vec<&str> = d
        .iter()
        .filter(|(k, v)| s.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .chain(s.keys().filter(|k| !d.contains_key(*k)).map(String::as_str))
        .collect();
    keys.dedup();
    format!(
        "the evidence re-derived from the included stream differs from the signed predicate in: {}",
        keys.join(", ")
    )
}

/// Streams the events (unless `derived_events` already holds them, pushed
/// during the scan) and exec-log members through a fresh [`EvidenceBuilder`],
/// re-hashing them on the way. Ok(Err) is a failed check, Err an I/O error of
/// the input.
fn rederive<R: Read + Seek>(
    input: &mut R,
    scanned: &Scanned,
    derived_events: Option<EvidenceBuilder>,
) -> io::Result<Result<Evidence, String>> {
    let mut builder = match derived_events {
        Some(b) => b,
        None => match rederive_events(input, scanned)? {
            Ok(b) => b,
            Err(msg) => return Ok(Err(msg)),
        },
    };
    rederive_rest(input, scanned, &mut builder).map(|r| {
        r.and_then(|()| {
            builder
                .finish()
                .map_err(|e| format!("re-deriving the evidence failed: {e}"))
        })
    })
}

/// The events member read again from `input` into a fresh builder.
fn rederive_events<R: Read + Seek>(
    input: &mut R,
    scanned: &Scanned,
) -> io::Result<Result<EvidenceBuilder, String>> {
    let mut builder = EvidenceBuilder::new();
    let events = scanned
        .member(EVENTS)
        .ok_or_else(|| io::Error::other("scan returned no events member"))?;
    input.seek(SeekFrom::Start(events.offset))?;
    let mut hashed = HashReader::new(BufReader::with_capacity(
        256 * 1024,
        (&mut *input).take(events.size),
    ));
    let decoded: Result<(), String> = (|| {
        // Bounded relative to the member's size: a signed bomb is refused too.
        let decoder = proof_evidence::bounded::BoundedZstd::new(&mut hashed)
            .map_err(|e| format!("{EVENTS} is not a zstd stream: {e}"))?;
        let budget = decoder.budget();
        let decoder = BufReader::with_capacity(128 * 1024, decoder);
        for (index, event) in DelimitedReader::new(decoder).enumerate() {
            let event = event.map_err(|e| format!("{EVENTS}: {}", EvidenceError::BepFraming(e)))?;
            budget
                .check_records(index as u64 + 1)
                .map_err(|e| format!("{EVENTS}: {e}"))?;
            builder
                .push_event(&event)
                .map_err(|e| format!("{EVENTS}: event #{index}: {e}"))?;
        }
        Ok(())
    })();
    let (sha, _) = hashed.drain()?;
    if sha != events.sha256 {
        return Ok(Err(format!("{EVENTS} changed while it was being verified")));
    }
    if let Err(msg) = decoded {
        return Ok(Err(msg));
    }
    Ok(Ok(builder))
}

/// The exec-log, gRPC-log and corroboration members, read again from `input`.
fn rederive_rest<R: Read + Seek>(
    input: &mut R,
    scanned: &Scanned,
    builder: &mut EvidenceBuilder,
) -> io::Result<Result<(), String>> {
    if let Some(log) = scanned.member(EXECLOG) {
        input.seek(SeekFrom::Start(log.offset))?;
        let mut hashed = HashReader::new(BufReader::new((&mut *input).take(log.size)));
        let pushed = builder.push_exec_log(&mut hashed);
        let (sha, _) = hashed.drain()?;
        if sha != log.sha256 {
            return Ok(Err(format!(
                "{EXECLOG} changed while it was being verified"
            )));
        }
        if let Err(e) = pushed {
            return Ok(Err(format!("{EXECLOG}: {e}")));
        }
    }
    for name in [GRPCLOG, CORROBORATION, EXECUTOR, ORIGIN] {
        let Some(m) = scanned.member(name) else {
            continue;
        };
        input.seek(SeekFrom::Start(m.offset))?;
        let mut hashed = HashReader::new(BufReader::new((&mut *input).take(m.size)));
        let pushed = match name {
            GRPCLOG => builder.push_remote_grpc_log(&mut hashed),
            CORROBORATION => builder.push_corroboration(&mut hashed),
            EXECUTOR => builder.push_executor_ledger(&mut hashed),
            _ => builder.push_origin(&mut hashed),
        };
        let (sha, _) = hashed.drain()?;
        if sha != m.sha256 {
            return Ok(Err(format!("{name} changed while it was being verified")));
        }
        if let Err(e) = pushed {
            return Ok(Err(format!("{name}: {e}")));
        }
    }
    Ok(Ok(()))
}

/// Re-derives the evidence of the events member while [`scan_tapped`]
/// hashes it: only once the statement's signature checks out (so unsigned
/// input costs no more than its digests), and only as far as everything is
/// ordinary: at the first oddity it gives up and [`rederive_events`] reads
/// the member again for the exact diagnostics.
struct EventsTap<'a> {
    trusted: &'a [VerifyingKey],
    decoding: Option<zstd::stream::write::Decoder<'static, EventSink>>,
    /// The builder after every event, when all went well.
    done: Option<EvidenceBuilder>,
}

impl Tap for EventsTap<'_> {
    fn begin(&mut self, name: &'static str, statement: &[u8]) -> bool {
        if name != EVENTS {
            return false;
        }
        let signed = Envelope::parse(statement).is_ok_and(|e| e.verify(self.trusted).is_ok());
        if !signed {
            return false;
        }
        self.decoding = zstd::stream::write::Decoder::new(EventSink::default()).ok();
        self.decoding.is_some()
    }

    fn data(&mut self, chunk: &[u8]) {
        let ok = match &mut self.decoding {
            Some(d) => {
                d.get_mut().compressed += chunk.len() as u64;
                d.write_all(chunk).is_ok() && !d.get_ref().failed
            }
            None => return,
        };
        if !ok {
            self.decoding = None;
        }
    }

    fn end(&mut self) {
        // `finish` fails on a cut-short zstd frame, like the reading decoder.
        if let Some(sink) = self.decoding.take().and_then(|d| d.finish().ok()) {
            if !sink.failed && sink.pending.is_empty() {
                self.done = Some(sink.builder);
            }
        }
    }
}

/// Splits decompressed bytes into delimited events and pushes each into the
/// builder; `failed` at the first framing or event error, or once the output
/// passes the decompression bounds of [`proof_evidence::bounded`] (the plain
/// read then reports the bomb).
#[derive(Default)]
struct EventSink {
    pending: Vec<u8>,
    builder: EvidenceBuilder,
    failed: bool,
    /// Compressed bytes handed to the decoder so far.
    compressed: u64,
    /// Decompressed bytes and events so far.
    out: u64,
    records: u64,
}

impl EventSink {
    /// Pushes the complete events at the front of `buf`; returns the bytes used.
    fn push_complete(&mut self, buf: &[u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let Some((len, n)) = decode_varint(&buf[pos..]) else {
                // A varint longer than 10 bytes is bad; a shorter tail waits.
                self.failed |= buf.len() - pos >= 10;
                return pos;
            };
            if len > DEFAULT_MAX_RECORD as u64 {
                self.failed = true;
                return pos;
            }
            let end = pos + n + len as usize;
            if end > buf.len() {
                return pos;
            }
            self.records += 1;
            let max_records = bounded::RECORDS_FLOOR
                .saturating_add(self.compressed.saturating_mul(bounded::RECORDS_PER_BYTE));
            if self.records > max_records || self.builder.push_event(&buf[pos + n..end]).is_err() {
                self.failed = true;
                return pos;
            }
            pos = end;
        }
        pos
    }
}

impl Write for EventSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.out = self.out.saturating_add(data.len() as u64);
        let max_out =
            bounded::FLOOR_BYTES.saturating_add(self.compressed.saturating_mul(bounded::MAX_RATIO));
        self.failed |= self.out > max_out;
        if self.failed {
            // Stops the decoder at once: no more work on this member.
            return Err(io::Error::other("the one-pass derivation gave up"));
        }
        if self.pending.is_empty() {
            let used = self.push_complete(data);
            self.pending.extend_from_slice(&data[used..]);
        } else {
            self.pending.extend_from_slice(data);
            let pending = std::mem::take(&mut self.pending);
            let used = self.push_complete(&pending);
            self.pending = pending;
            self.pending.drain(..used);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{record_delimited, SigningKey};
    use std::io::Cursor;

    fn fixture(scenario: &str, file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/bazel-4.2.3")
            .join(scenario)
            .join(file)
    }

    /// The scan with the events tap: what the tap derived, if anything.
    fn tapped(bytes: &[u8], trusted: &[VerifyingKey]) -> (Scanned, Option<EvidenceBuilder>) {
        let mut tap = EventsTap {
            trusted,
            decoding: None,
            done: None,
        };
        let scanned = scan_tapped(bytes, &mut tap).unwrap();
        (scanned, tap.done)
    }

    #[test]
    fn one_pass_derivation_equals_reading_the_events_again() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        for scenario in ["remote-build", "remote-test", "failing-build", "local-only"] {
            let bep = File::open(fixture(scenario, "bep.bin")).unwrap();
            let log = fixture(scenario, "execution_log.bin");
            let out = record_delimited(bep, Some(log.as_path()), &key, dir.path()).unwrap();
            let bytes = std::fs::read(&out.path).unwrap();
            let trusted = [key.verifying_key()];
            let (scanned, done) = tapped(&bytes, &trusted);
            let one_pass = rederive(&mut Cursor::new(&bytes), &scanned, done)
                .unwrap()
                .unwrap();
            let (_, done) = tapped(&bytes, &trusted);
            assert!(done.is_some(), "{scenario}: the tap derived nothing");
            let two_pass = rederive(&mut Cursor::new(&bytes), &scanned, None)
                .unwrap()
                .unwrap();
            assert_eq!(
                serde_json::to_value(&one_pass).unwrap(),
                serde_json::to_value(&two_pass).unwrap(),
                "{scenario}"
            );
            // No work on the events before the signature checks out.
            let other = [SigningKey::from_bytes(&[1; 32]).verifying_key()];
            assert!(tapped(&bytes, &other).1.is_none(), "{scenario}");
        }
    }

    #[test]
    fn one_pass_stops_at_the_decompression_bound() {
        // 32 MiB of zeros (empty records) from a few KB: over the bound.
        let zeros = vec![0u8; (bounded::FLOOR_BYTES as usize) * 2];
        let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
        let mut tap = EventsTap {
            trusted: &[],
            decoding: zstd::stream::write::Decoder::new(EventSink::default()).ok(),
            done: None,
        };
        for chunk in bomb.chunks(64 * 1024) {
            tap.data(chunk);
        }
        assert!(tap.decoding.is_none(), "the tap gave up");
        tap.end();
        assert!(tap.done.is_none());
    }

    #[test]
    fn one_pass_gives_up_on_a_cut_short_events_stream_and_the_diagnostic_stays() {
        // Events whose zstd frame is complete but whose last record is cut:
        // the tap derives nothing, verify reports the framing error.
        let bin = std::fs::read(fixture("remote-build", "bep.bin")).unwrap();
        let cut = zstd::bulk::compress(&bin[..bin.len() - 3], 3).unwrap();
        let mut sink = EventSink::default();
        let mut d = zstd::stream::write::Decoder::new(&mut sink).unwrap();
        d.write_all(&cut).unwrap();
        d.flush().unwrap();
        drop(d);
        assert!(!sink.failed && !sink.pending.is_empty());
        // And a complete stream leaves nothing pending.
        let whole = zstd::bulk::compress(&bin, 3).unwrap();
        let mut sink = EventSink::default();
        let mut d = zstd::stream::write::Decoder::new(&mut sink).unwrap();
        for chunk in whole.chunks(1000) {
            d.write_all(chunk).unwrap();
        }
        d.flush().unwrap();
        drop(d);
        assert!(!sink.failed && sink.pending.is_empty());
        assert_eq!(sink.builder.finish().unwrap().event_count, 81);
    }
}
