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
    let mut builder = EvidenceBuilder::new();
    // events.bep.zst: the delimited stream, zstd-compressed into the spool.
    let spooled = spool_events(events, &mut builder, out_dir)?;
    // execlog.bin and remote_grpc.log: exactly as given.
    let exec_log = inputs
        .exec_log
        .map(|path| {
            hash_file(
                path,
                &[
                    "cannot open the execution log",
                    "cannot read the execution log",
                ],
                |r| builder.push_exec_log(r),
            )
            .map(|(sha, len)| (path, sha, len))
        })
        .transpose()?;
    let grpc_log = inputs
        .remote_grpc_log
        .map(|path| {
            hash_file(
                path,
                &[
                    "cannot open the remote gRPC log",
                    "cannot read the remote gRPC log",
                ],
                |r| builder.push_remote_grpc_log(r),
            )
            .map(|(sha, len)| (path, sha, len))
        })
        .transpose()?;
    // corroboration.bin, executor.bin, origin.json: the bytes given.
    let origin = inputs.origin.map(proof_evidence::Origin::to_member);
    let corroboration_sha = pushed(inputs.corroboration, |b| builder.push_corroboration(b))?;
    let ledger_sha = pushed(inputs.executor_ledger, |b| builder.push_executor_ledger(b))?;
    let origin_sha = pushed(origin.as_deref(), |b| builder.push_origin(b))?;

    let evidence = builder.finish()?;
    let invocation_id = signable_id(&evidence, inputs.expect_invocation_id)?;
    let summary = crate::summary::render(&evidence, &Policy::default()).into_bytes();
    let mut subjects = vec![(EVENTS, spooled.sha)];
    subjects.extend(exec_log.map(|(_, sha, _)| (EXECLOG, sha)));
    subjects.extend(grpc_log.map(|(_, sha, _)| (GRPCLOG, sha)));
    subjects.extend(corroboration_sha.map(|sha| (CORROBORATION, sha)));
    subjects.extend(ledger_sha.map(|sha| (EXECUTOR, sha)));
    subjects.extend(origin_sha.map(|sha| (ORIGIN, sha)));
    subjects.push((SUMMARY, sha2::Sha256::digest(&summary).into()));
    let statement = Statement::new(&subjects, &evidence)?;
    let envelope = Envelope::sign(statement.to_bytes(), key).to_bytes();

    let members = Members {
        envelope: &envelope,
        events: spooled,
        exec_log,
        grpc_log,
        corroboration: inputs.corroboration,
        ledger: inputs.executor_ledger,
        origin: origin.as_deref(),
        summary: &summary,
    };
    let dest = out_dir.join(format!("{invocation_id}.proof.tar"));
    let artifact_sha = write_artifact(members, out_dir, &dest, inputs.exclusive)?;
    Ok(RecordOutcome {
        path: dest,
        invocation_id,
        evidence,
        artifact_sha256: hex::encode(artifact_sha),
    })
}

/// The events, compressed into a spool file in `out_dir` as they are fed to
/// the evidence.
struct Spooled {
    file: File,
    sha: [u8; 32],
    len: u64,
}

/// Feeds every event to `builder` and writes the delimited stream,
/// zstd-compressed, into a spool file in `out_dir` (memory does not grow
/// with the number of events).
fn spool_events<I, E>(
    events: I,
    builder: &mut EvidenceBuilder,
    out_dir: &Path,
) -> Result<Spooled, RecordError>
where
    I: IntoIterator<Item = Result<Vec<u8>, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let spool =
        tempfile::tempfile_in(out_dir).map_err(io_err("cannot create a spool file in", out_dir))?;
    let spool_err = io_err("cannot write the spool file in", out_dir);
    (|| {
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
        Ok::<_, io::Error>(Spooled { file, sha, len })
    })()
    .map_err(|e| match e.downcast::<RecordError>() {
        Ok(r) => r,
        Err(e) => match e.downcast::<EvidenceError>() {
            Ok(ev) => RecordError::Evidence(ev),
            Err(e) => spool_err(e),
        },
    })
}

/// Reads the file at `path` once through `push` (the evidence), hashing it;
/// `what` names it in errors.
fn hash_file(
    path: &Path,
    what: &'static [&'static str; 2],
    push: impl FnOnce(&mut HashReader<io::BufReader<File>>) -> Result<(), EvidenceError>,
) -> Result<([u8; 32], u64), RecordError> {
    let file = File::open(path).map_err(io_err(what[0], path))?;
    let mut reader = HashReader::new(io::BufReader::new(file));
    push(&mut reader)?;
    reader.drain().map_err(io_err(what[1], path))
}

/// Feeds `bytes`, when given, to the evidence with `push`; their sha256.
fn pushed(
    bytes: Option<&[u8]>,
    push: impl FnOnce(&[u8]) -> Result<(), EvidenceError>,
) -> Result<Option<[u8; 32]>, RecordError> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    push(bytes)?;
    Ok(Some(sha2::Sha256::digest(bytes).into()))
}

/// The evidence's invocation id, when it may name a proof file: the stream's
/// own id (when known) and a valid file name.
fn signable_id(evidence: &Evidence, expect: Option<&str>) -> Result<String, RecordError> {
    let invocation_id = evidence.invocation_id.clone();
    if let Some(stream) = expect {
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
    Ok(invocation_id)
}

/// What goes into the tar, in member order.
struct Members<'a> {
    envelope: &'a [u8],
    events: Spooled,
    exec_log: Option<(&'a Path, [u8; 32], u64)>,
    grpc_log: Option<(&'a Path, [u8; 32], u64)>,
    corroboration: Option<&'a [u8]>,
    ledger: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
    summary: &'a [u8],
}

/// Writes the tar to a temp file beside `dest`, then renames it into place
/// (exclusive: links it, which fails if the name exists; a crash leaves
/// either no artifact or the whole one). A member copied again from disk
/// must still be the bytes hashed (and re-derived) before signing. Returns
/// the artifact's sha256.
fn write_artifact(
    m: Members<'_>,
    out_dir: &Path,
    dest: &Path,
    exclusive: bool,
) -> Result<[u8; 32], RecordError> {
    let tmp = tempfile::Builder::new()
        .prefix(".proof-")
        .suffix(".tmp")
        .tempfile_in(out_dir)
        .map_err(io_err("cannot create a temporary file in", out_dir))?;
    let mut tar = TarWriter::new(HashWriter::new(BufWriter::new(tmp.as_file())));
    tar.append(STATEMENT, m.envelope.len() as u64, &mut &m.envelope[..])?;
    let mut spool = m.events.file;
    spool
        .seek(SeekFrom::Start(0))
        .map_err(io_err("cannot rewind the spool file in", out_dir))?;
    let sha = tar.append(EVENTS, m.events.len, &mut io::BufReader::new(&mut spool))?;
    if sha != m.events.sha {
        return Err(RecordError::Io {
            what: "the spool file changed while recording in",
            path: out_dir.to_path_buf(),
            source: io::Error::other("digest mismatch"),
        });
    }
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
    if let Some(d) = m.exec_log {
        append_file(
            EXECLOG,
            d,
            "cannot reopen the execution log",
            RecordError::ExecLogChanged,
        )?;
    }
    if let Some(d) = m.grpc_log {
        append_file(
            GRPCLOG,
            d,
            "cannot reopen the remote gRPC log",
            RecordError::GrpcLogChanged,
        )?;
    }
    for (name, bytes) in [
        (CORROBORATION, m.corroboration),
        (EXECUTOR, m.ledger),
        (ORIGIN, m.origin),
        (SUMMARY, Some(m.summary)),
    ] {
        if let Some(bytes) = bytes {
            tar.append(name, bytes.len() as u64, &mut &bytes[..])?;
        }
    }
    let (buf, artifact_sha, _) = tar.finish()?.finish();
    buf.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(io_err("cannot write the artifact in", out_dir))?;
    let persisted = if exclusive {
        tmp.persist_noclobber(dest)
    } else {
        tmp.persist(dest)
    };
    persisted.map_err(|e| {
        if exclusive && e.error.kind() == io::ErrorKind::AlreadyExists {
            RecordError::Exists(dest.to_path_buf())
        } else {
            RecordError::Io {
                what: "cannot move the artifact into place at",
                path: dest.to_path_buf(),
                source: e.error,
            }
        }
    })?;
    File::open(out_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync the directory", out_dir))?;
    Ok(artifact_sha)
}
