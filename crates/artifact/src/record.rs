//! Recording: BEP events (+ exec log) → evidence → signed canonical tar,
//! written atomically as `OUT_DIR/INVOCATION_ID.proof.tar`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use proof_evidence::{Evidence, EvidenceBuilder, EvidenceError};
use proof_stream::delimited::{encode_varint, DelimitedReader};
use sha2::Digest as _;
use thiserror::Error;

use crate::dsse::Envelope;
use crate::hashio::{HashReader, HashWriter};
use crate::policy::Policy;
use crate::statement::Statement;
use crate::tar::{
    TarError, TarWriter, CORROBORATION, EVENTS, EXECLOG, EXECUTOR, GRPCLOG, ORIGIN, STATEMENT,
    SUMMARY,
};

/// zstd level of `events.bep.zst` (single frame, checksum on, no content
/// size, single-threaded, no dictionary).
pub const ZSTD_LEVEL: i32 = 6;

/// Why an artifact could not be recorded.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("reading BEP event #{index} failed: {source}")]
    Events {
        index: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the invocation id {0:?} cannot name a file; expected letters, digits, '-', '_' or '.' (a Bazel UUID)")]
    BadInvocationId(String),
    #[error("the execution log {} changed while it was being recorded; record again once Bazel has finished writing it", .0.display())]
    ExecLogChanged(PathBuf),
    #[error("the remote gRPC log {} changed while it was being recorded; record again once Bazel has finished writing it", .0.display())]
    GrpcLogChanged(PathBuf),
    #[error("the evidence cannot be serialized as JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("writing the artifact failed: {0}")]
    Tar(#[from] TarError),
    #[error("the stream was sent as invocation {stream:?} but its BuildStarted names invocation {evidence:?}; no proof is signed for a stream that claims another invocation's id")]
    InvocationMismatch { stream: String, evidence: String },
    #[error("{} already exists and an artifact is never replaced; move it away to sign this invocation again", .0.display())]
    Exists(PathBuf),
}

/// What [`record`] produced.
#[derive(Debug, Clone)]
pub struct RecordOutcome {
    /// `out_dir/INVOCATION_ID.proof.tar`.
    pub path: PathBuf,
    pub invocation_id: String,
    /// The signed predicate.
    pub evidence: Evidence,
    /// Lowercase hex SHA-256 of the whole artifact file.
    pub artifact_sha256: String,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RecordError {
    let path = path.to_path_buf();
    move |source| RecordError::Io { what, path, source }
}

/// The longest invocation id a proof artifact can be named with
/// (`ID.proof.tar`); the BES backend refuses longer ids before storing anything.
pub const MAX_INVOCATION_ID_LEN: usize = 80;

fn valid_invocation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_INVOCATION_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The optional raw evidence recorded beside the BEP stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordInputs<'a> {
    /// The execution log file (member `execlog.bin`).
    pub exec_log: Option<&'a Path>,
    /// The `--experimental_remote_grpc_log` file (member `remote_grpc.log`).
    pub remote_grpc_log: Option<&'a Path>,
    /// The corroboration records (member `corroboration.bin`), as produced
    /// by the `proof-corroborate` crate.
    pub corroboration: Option<&'a [u8]>,
    /// The executor's ledger (member `executor.bin`), as produced by the
    /// `proof-executor` crate.
    pub executor_ledger: Option<&'a [u8]>,
    /// Who submitted the stream (member `origin.json`).
    pub origin: Option<&'a proof_evidence::Origin>,
    /// The invocation the stream was sent as (the BES stream id): nothing
    /// is signed unless the evidence's invocation id (its BuildStarted) is
    /// this one.
    pub expect_invocation_id: Option<&'a str>,
    /// Create the artifact only if none exists for the invocation
    /// ([`RecordError::Exists`]); otherwise an older one is replaced.
    pub exclusive: bool,
}

/// Records a delimited BEP stream (`--build_event_binary_file` form).
pub fn record_delimited(
    bep: impl Read,
    exec_log: Option<&Path>,
    key: &SigningKey,
    out_dir: &Path,
) -> Result<RecordOutcome, RecordError> {
    record(DelimitedReader::new(bep), exec_log, key, out_dir)
}

/// Records serialized BEP events (each one `build_event_stream.BuildEvent`,
/// in stream order), the optional execution log file, signs with `key`, and
/// atomically writes `out_dir/INVOCATION_ID.proof.tar` (replacing an older
/// artifact of the same invocation; [`RecordInputs::exclusive`] never does). Memory use does not grow with the
/// number of events: they are compressed into a spool file in `out_dir`.
pub fn record<I, E>(
    events: I,
    exec_log: Option<&Path>,
    key: &SigningKey,
    out_dir: &Path,
) -> Result<RecordOutcome, RecordError>
where
    I: IntoIterator<Item = Result<Vec<u8>, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let inputs = RecordInputs {
        exec_log,
        ..RecordInputs::default()
    };
    record_with(events, &inputs, key, out_dir)
}

/// [`record`] with every optional member: the execution log, the remote
/// gRPC log and the corroboration records, each stored as its own member,
/// named by the statement's subjects and read by the evidence derivation.
pub fn record_with<I, E>(
    events: I,
    inputs: &RecordInputs<'_>,
    key: &SigningKey,
    out_dir: &Path,
) -> Result<RecordOutcome, RecordError>
where
    I: IntoIterator<Item = Result<Vec<u8>, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exec_log = inputs.exec_log;
    let spool =
        tempfile::tempfile_in(out_dir).map_err(io_err("cannot create a spool file in", out_dir))?;
    let mut builder = EvidenceBuilder::new();

    // events.bep.zst: the delimited stream, zstd-compressed into the spool.
    let spool_err = io_err("cannot write the spool file in", out_dir);
    let (mut spool, events_sha, events_len) = (|| {
        let mut enc =
            zstd::stream::write::Encoder::new(HashWriter::new(BufWriter::new(spool)), ZSTD_LEVEL)?;
        enc.include_checksum(true)?;
        enc.include_contentsize(false)?;
        enc.include_dictid(false)?;
        let mut frame = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            let event = event.map_err(|e| {
                io::Error::other(RecordError::Events {
                    index: index as u64,
                    source: e.into(),
                })
            })?;
            builder.push_event(&event).map_err(io::Error::other)?;
            frame.clear();
            encode_varint(event.len() as u64, &mut frame);
            enc.write_all(&frame)?;
            enc.write_all(&event)?;
        }
        let (buf, sha, len) = enc.finish()?.finish();
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        Ok::<_, io::Error>((file, sha, len))
    })()
    .map_err(|e| match e.downcast::<RecordError>() {
        Ok(r) => r,
        Err(e) => match e.downcast::<EvidenceError>() {
            Ok(ev) => RecordError::Evidence(ev),
            Err(e) => spool_err(e),
        },
    })?;

    // execlog.bin: exactly as given.
    let mut exec_digest = None;
    if let Some(path) = exec_log {
        let file = File::open(path).map_err(io_err("cannot open the execution log", path))?;
        let mut reader = HashReader::new(io::BufReader::new(file));
        builder.push_exec_log(&mut reader)?;
        let (sha, len) = reader
            .drain()
            .map_err(io_err("cannot read the execution log", path))?;
        exec_digest = Some((path, sha, len));
    }

    // remote_grpc.log: exactly as given.
    let mut grpc_digest = None;
    if let Some(path) = inputs.remote_grpc_log {
        let file = File::open(path).map_err(io_err("cannot open the remote gRPC log", path))?;
        let mut reader = HashReader::new(io::BufReader::new(file));
        builder.push_remote_grpc_log(&mut reader)?;
        let (sha, len) = reader
            .drain()
            .map_err(io_err("cannot read the remote gRPC log", path))?;
        grpc_digest = Some((path, sha, len));
    }
    // corroboration.bin: the bytes given.
    let corroboration = inputs.corroboration;
    let corroboration_sha: Option<[u8; 32]> = match corroboration {
        Some(bytes) => {
            builder.push_corroboration(bytes)?;
            Some(sha2::Sha256::digest(bytes).into())
        }
        None => None,
    };

    let ledger = inputs.executor_ledger;
    let ledger_sha: Option<[u8; 32]> = match ledger {
        Some(bytes) => {
            builder.push_executor_ledger(bytes)?;
            Some(sha2::Sha256::digest(bytes).into())
        }
        None => None,
    };
    let origin = inputs.origin.map(proof_evidence::Origin::to_member);
    let origin_sha: Option<[u8; 32]> = match &origin {
        Some(bytes) => {
            builder.push_origin(bytes.as_slice())?;
            Some(sha2::Sha256::digest(bytes).into())
        }
        None => None,
    };

    let evidence = builder.finish()?;
    let invocation_id = evidence.invocation_id.clone();
    if let Some(stream) = inputs.expect_invocation_id {
        if stream != invocation_id {
            return Err(RecordError::InvocationMismatch {
                stream: stream.to_string(),
                evidence: invocation_id,
            });
        }
    }
    if !valid_invocation_id(&invocation_id) {
        return Err(RecordError::BadInvocationId(invocation_id));
    }
    let summary = crate::summary::render(&evidence, &Policy::default()).into_bytes();
    let summary_sha: [u8; 32] = sha2::Sha256::digest(&summary).into();

    let mut subjects = vec![(EVENTS, events_sha)];
    if let Some((_, sha, _)) = exec_digest {
        subjects.push((EXECLOG, sha));
    }
    if let Some((_, sha, _)) = grpc_digest {
        subjects.push((GRPCLOG, sha));
    }
    if let Some(sha) = corroboration_sha {
        subjects.push((CORROBORATION, sha));
    }
    if let Some(sha) = ledger_sha {
        subjects.push((EXECUTOR, sha));
    }
    if let Some(sha) = origin_sha {
        subjects.push((ORIGIN, sha));
    }
    subjects.push((SUMMARY, summary_sha));
    let statement = Statement::new(&subjects, &evidence)?;
    let envelope = Envelope::sign(statement.to_bytes(), key).to_bytes();

    // Write the tar to a temp file beside the destination, then rename
    // (exclusive: link it into place, which fails if the name exists; a
    // crash leaves either no artifact or the whole one).
    let dest = out_dir.join(format!("{invocation_id}.proof.tar"));
    let tmp = tempfile::Builder::new()
        .prefix(".proof-")
        .suffix(".tmp")
        .tempfile_in(out_dir)
        .map_err(io_err("cannot create a temporary file in", out_dir))?;
    let mut tar = TarWriter::new(HashWriter::new(BufWriter::new(tmp.as_file())));
    tar.append(STATEMENT, envelope.len() as u64, &mut &envelope[..])?;
    spool
        .seek(SeekFrom::Start(0))
        .map_err(io_err("cannot rewind the spool file in", out_dir))?;
    let sha = tar.append(EVENTS, events_len, &mut io::BufReader::new(&mut spool))?;
    if sha != events_sha {
        return Err(RecordError::Io {
            what: "the spool file changed while recording in",
            path: out_dir.to_path_buf(),
            source: io::Error::other("digest mismatch"),
        });
    }
    // A file member is copied again from disk: it must still be the bytes
    // that were hashed (and re-derived) before signing.
    let mut append_file = |name: &str,
                           (path, want, len): (&Path, [u8; 32], u64),
                           what: &'static str,
                           changed: fn(PathBuf) -> RecordError|
     -> Result<(), RecordError> {
        let file = File::open(path).map_err(io_err(what, path))?;
        let got = tar
            .append(name, len, &mut io::BufReader::new(file))
            .map_err(|e| match e {
                TarError::Layout(_) => changed(path.to_path_buf()),
                e => RecordError::Tar(e),
            })?;
        if got != want {
            return Err(changed(path.to_path_buf()));
        }
        Ok(())
    };
    if let Some(d) = exec_digest {
        append_file(
            EXECLOG,
            d,
            "cannot reopen the execution log",
            RecordError::ExecLogChanged,
        )?;
    }
    if let Some(d) = grpc_digest {
        append_file(
            GRPCLOG,
            d,
            "cannot reopen the remote gRPC log",
            RecordError::GrpcLogChanged,
        )?;
    }
    if let Some(bytes) = corroboration {
        tar.append(CORROBORATION, bytes.len() as u64, &mut &bytes[..])?;
    }
    if let Some(bytes) = ledger {
        tar.append(EXECUTOR, bytes.len() as u64, &mut &bytes[..])?;
    }
    if let Some(bytes) = &origin {
        tar.append(ORIGIN, bytes.len() as u64, &mut &bytes[..])?;
    }
    tar.append(SUMMARY, summary.len() as u64, &mut &summary[..])?;
    let (buf, artifact_sha, _) = tar.finish()?.finish();
    buf.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(io_err("cannot write the artifact in", out_dir))?;
    let persisted = if inputs.exclusive {
        tmp.persist_noclobber(&dest)
    } else {
        tmp.persist(&dest)
    };
    persisted.map_err(|e| {
        if inputs.exclusive && e.error.kind() == io::ErrorKind::AlreadyExists {
            RecordError::Exists(dest.clone())
        } else {
            RecordError::Io {
                what: "cannot move the artifact into place at",
                path: dest.clone(),
                source: e.error,
            }
        }
    })?;
    File::open(out_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync the directory", out_dir))?;
    Ok(RecordOutcome {
        path: dest,
        invocation_id,
        evidence,
        artifact_sha256: hex::encode(artifact_sha),
    })
}
