//! `proof audit` and `proof probe-ac`: thin wrappers around proof-acaudit
//! (verdicts, report) and proof-executor's ActionCache client
//! (docs/ac-authority.md).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use proof_acaudit::probe::{classify, ProbeOutcome, PROBE_PREDICATE_TYPE};
use proof_acaudit::report::{finish, plan, ProofInput, Skipped};
use proof_acaudit::{read_ledger, AuditReport, TargetOutputs};
use proof_artifact::{Policy, VerifyingKey};
use proof_executor::ac::{block_on, parse_digest, AcAsk, AcClient};

use crate::signing::load_verifying_keys;
use crate::{EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE};

/// Largest proof artifact read into memory for the audit.
const MAX_PROOF_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Md,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// The executor whose ActionCache is audited (grpc://HOST:PORT).
    #[arg(long, value_name = "URL")]
    executor: String,
    /// The directory holding the proof artifacts (*.proof.tar).
    #[arg(long, value_name = "DIR")]
    proofs: PathBuf,
    /// Trusted public key(s) of the server that signed them (SPKI PEM).
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Audit only the proofs the manifest records for its promoted
    /// (executor-backed or default) classes, and name those classes.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// GetActionResult calls in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
    /// A header sent with every call (`NAME: VALUE`, e.g. the audit lane's
    /// credentials); repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The proofs of `manifest`'s promoted classes, by artifact SHA-256: the
/// class ids of each.
fn promoted(manifest: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read the manifest {}", manifest.display()))?;
    let m = proof_manifest::parse_manifest(&text)
        .with_context(|| format!("{} is not a valid manifest", manifest.display()))?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, class) in &m.classes {
        if class.mode == proof_manifest::Mode::CacheFirst {
            continue;
        }
        for p in &class.proofs {
            out.entry(p.artifact_sha256.clone())
                .or_default()
                .push(id.clone());
        }
    }
    Ok(out)
}

/// Reads one proof file (at most [`MAX_PROOF_BYTES`]): its bytes and
/// their SHA-256.
fn read_proof(path: &Path) -> std::result::Result<(Vec<u8>, String), String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .len();
    if len > MAX_PROOF_BYTES {
        return Err(format!(
            "{len} bytes: larger than the audit's limit of {MAX_PROOF_BYTES}"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let sha = proof_manifest::io::sha256_hex(&bytes);
    Ok((bytes, sha))
}

/// Verifies and decodes one proof's `bytes` (one read: what is verified,
/// matched against the manifest and audited are the same bytes); Err is
/// why it is skipped.
fn load_one(
    file_name: String,
    bytes: &[u8],
    keys: &[VerifyingKey],
    executor: &str,
) -> std::result::Result<ProofInput, String> {
    let report = proof_artifact::verify(Cursor::new(&bytes), keys, &Policy::default())
        .map_err(|e| format!("cannot verify it: {e}"))?;
    if !report.ok {
        let f = report.first_failure();
        return Err(format!(
            "does not verify ({}: {})",
            f.map_or("", |c| c.name.as_str()),
            f.map_or("", |c| c.detail.as_str())
        ));
    }
    let ev = report.evidence.as_ref().ok_or("no evidence")?;
    let Some(att) = &ev.attestation else {
        return Err("not executor-attested (signed without `proof serve --executor`): nothing the executor recorded to audit".into());
    };
    let want = proof_evidence::attestation::normalise_endpoint(executor);
    let known = std::iter::once(&att.executor)
        .chain(&att.endpoint_aliases)
        .any(|e| proof_evidence::attestation::normalise_endpoint(e) == want);
    if !known {
        return Err(format!(
            "attested by executor {} (aliases: {}), not {executor}",
            att.executor,
            if att.endpoint_aliases.is_empty() {
                "none".to_string()
            } else {
                att.endpoint_aliases.join(", ")
            }
        ));
    }
    let scanned =
        proof_artifact::tar::scan(bytes).map_err(|e| format!("cannot read its members: {e}"))?;
    let member = |name: &str| {
        scanned.member(name).map(|m| {
            let start = usize::try_from(m.offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(m.size).unwrap_or(usize::MAX));
            bytes.get(start..end).unwrap_or_default()
        })
    };
    let ledger_bytes = member(proof_artifact::tar::EXECUTOR).ok_or("no executor.bin member")?;
    let ledger = read_ledger(ledger_bytes).map_err(|e| e.to_string())?;
    let events_zst = member(proof_artifact::tar::EVENTS).ok_or("no events member")?;
    let events = zstd_decode(events_zst)?;
    let records = proof_stream::delimited::split_delimited(&events, usize::MAX)
        .map_err(|e| format!("events: {e}"))?;
    let outputs = TargetOutputs::from_events(records);
    Ok(ProofInput {
        proof: file_name,
        invocation_id: ev.invocation_id.clone(),
        classes: Vec::new(),
        tenant: ev.origin.as_ref().and_then(|o| o.tenant.clone()),
        ledger,
        outputs,
    })
}

fn zstd_decode(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| format!("events: {e}"))?
        .take(MAX_PROOF_BYTES * 4)
        .read_to_end(&mut out)
        .map_err(|e| format!("events: not a zstd stream: {e}"))?;
    Ok(out)
}

/// Proofs already verified and decoded, by path, while their file (size,
/// modification time) is unchanged: the continuous audit verifies each
/// proof once, not once per run.
#[derive(Default)]
pub struct ProofCache {
    by_path: std::collections::HashMap<PathBuf, CachedProof>,
}

struct CachedProof {
    len: u64,
    modified: Option<std::time::SystemTime>,
    sha: String,
    loaded: std::result::Result<ProofInput, String>,
}

/// Every auditable proof of `dir` (file-name order), and those skipped.
pub fn load_proofs(
    dir: &Path,
    keys: &[VerifyingKey],
    manifest: Option<&Path>,
    executor: &str,
    cache: &mut ProofCache,
) -> Result<(Vec<ProofInput>, Vec<Skipped>)> {
    let classes = match manifest {
        Some(m) => Some(promoted(m)?),
        None => None,
    };
    let paths = proof_manifest::io::proof_paths(dir)
        .with_context(|| format!("cannot read the proofs directory {}", dir.display()))?;
    let mut inputs = Vec::new();
    let mut skipped = Vec::new();
    let mut kept = std::collections::HashMap::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = std::fs::metadata(&path).ok();
        let (len, modified) = (
            meta.as_ref().map_or(0, |m| m.len()),
            meta.as_ref().and_then(|m| m.modified().ok()),
        );
        let entry = match cache.by_path.remove(&path) {
            Some(c) if meta.is_some() && c.len == len && c.modified == modified => c,
            _ => match read_proof(&path) {
                Ok((bytes, sha)) => CachedProof {
                    len,
                    modified,
                    loaded: load_one(name.clone(), &bytes, keys, executor),
                    sha,
                },
                Err(why) => {
                    skipped.push(Skipped { proof: name, why });
                    continue;
                }
            },
        };
        let cls = match &classes {
            None => Some(Vec::new()),
            // Not behind a promoted class: not audited, not listed.
            Some(by_sha) => by_sha.get(&entry.sha).cloned(),
        };
        if let Some(cls) = cls {
            match &entry.loaded {
                Ok(p) => inputs.push(ProofInput {
                    classes: cls,
                    ..p.clone()
                }),
                Err(why) => skipped.push(Skipped {
                    proof: name,
                    why: why.clone(),
                }),
            }
        }
        kept.insert(path, entry);
    }
    cache.by_path = kept;
    Ok((inputs, skipped))
}

/// One audit run. `first_seen` as in [`proof_acaudit::report::finish`];
/// `progress` gets (done, total).
pub fn run_audit(
    client: &AcClient,
    proofs: &[ProofInput],
    skipped: Vec<Skipped>,
    concurrency: usize,
    first_seen: &dyn Fn(&str, &str) -> Option<String>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<AuditReport> {
    let p = plan(proofs);
    let asks: Vec<AcAsk> = p
        .items
        .iter()
        .map(|i| AcAsk {
            instance_name: i.instance_name.clone(),
            digest: parse_digest(&i.action_digest).unwrap_or_default(),
        })
        .collect();
    let answers = block_on(client.get_many(&asks, concurrency, progress)).with_context(|| {
        format!(
            "the audit needs the executor's ActionCache; check --executor {} and that it is running",
            client.endpoint()
        )
    })?;
    Ok(finish(
        &p,
        &answers,
        client.endpoint(),
        &now_rfc3339(),
        skipped,
        first_seen,
    ))
}

pub fn audit(a: AuditArgs) -> Result<u8> {
    let keys = load_verifying_keys(&a.keys)?;
    let client = AcClient::new(&a.executor, &a.headers)?;
    let t = Instant::now();
    let (proofs, skipped) = load_proofs(
        &a.proofs,
        &keys,
        a.manifest.as_deref(),
        &a.executor,
        &mut ProofCache::default(),
    )?;
    eprintln!(
        "proof audit: {} executor-attested proof(s) to audit, {} skipped ({:.1} s)",
        proofs.len(),
        skipped.len(),
        t.elapsed().as_secs_f64()
    );
    let last = std::sync::Mutex::new(Instant::now());
    let progress = |done: usize, total: usize| {
        let mut l = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if done == total || l.elapsed().as_secs() >= 2 {
            *l = Instant::now();
            eprintln!("proof audit: {done}/{total} AC entries read");
        }
    };
    let mut report = match run_audit(
        &client,
        &proofs,
        skipped,
        usize::try_from(a.concurrency).unwrap_or(16),
        &|_, _| None,
        &progress,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("proof audit: {e:#}");
            return Ok(EXIT_UNUSABLE);
        }
    };
    report.scope = match &a.manifest {
        Some(m) => format!("the promoted classes of {}", m.display()),
        None => format!("the executor-attested proofs of {}", a.proofs.display()),
    };
    match a.format {
        Format::Text => out!("{}", proof_acaudit::report::render_text(&report)),
        Format::Md => out!("{}", proof_acaudit::report::render_md(&report)),
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
    }
    if report.proofs_audited.is_empty() {
        eprintln!(
            "proof audit: no executor-attested proof of {} to audit{}",
            a.executor,
            if a.manifest.is_some() {
                " behind the manifest's promoted classes"
            } else {
                ""
            }
        );
    }
    Ok(report.exit_code)
}

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The executor whose ActionCache is probed (grpc://HOST:PORT).
    #[arg(long, value_name = "URL")]
    executor: String,
    /// The REAPI instance name the lane uses.
    #[arg(long, default_value = "")]
    instance: String,
    /// The lane's credentials, sent with both calls (`NAME: VALUE`);
    /// repeatable. Only the names are recorded.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Sign the result with this private key (from `proof keygen`; the
    /// proof server's key, so `proof report` trusts it).
    #[arg(long, value_name = "KEY", requires = "out")]
    key: Option<PathBuf>,
    /// With --key: write the signed result (a DSSE envelope) here.
    #[arg(long, value_name = "FILE", requires = "key")]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// A canary nonce that no two probes share.
fn nonce() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

pub fn probe(a: ProbeArgs) -> Result<u8> {
    let client = AcClient::new(&a.executor, &a.headers)?;
    let nonce = nonce();
    let digest = proof_acaudit::probe::canary_digest(&nonce);
    let outcome = match block_on(client.probe(&a.instance, &nonce)) {
        Ok((code, message, readback)) => {
            let (posture, detail) = classify(code, &readback);
            ProbeOutcome {
                executor: a.executor.clone(),
                instance_name: a.instance.clone(),
                header_names: client.header_names(),
                canary_digest: format!("{}/{}", digest.hash, digest.size_bytes),
                write_code: code,
                write_status: proof_acaudit::probe::code::name(code).to_string(),
                write_message: message,
                readback,
                passed: posture == proof_acaudit::probe::Posture::ReadOnly,
                posture,
                probed_at: now_rfc3339(),
                detail,
            }
        }
        Err(e) => {
            eprintln!("proof probe-ac: {e}; check --executor and that it is running");
            return Ok(EXIT_UNUSABLE);
        }
    };
    if let (Some(key), Some(out)) = (&a.key, &a.out) {
        let key = crate::signing::load_signing_key(key)?;
        let env = sign_probe(&outcome, &key)?;
        std::fs::write(out, env).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("proof probe-ac: signed result written to {}", out.display());
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        outln!(
            "{} instance {:?} on {}: {} ({})\n  canary action {} (never a real action digest); write answered {}{}; read-back: {:?}",
            if outcome.passed { "PASS" } else { "FAIL" },
            outcome.instance_name,
            outcome.executor,
            outcome.posture.as_str(),
            outcome.detail,
            outcome.canary_digest,
            outcome.write_status,
            if outcome.write_message.is_empty() {
                String::new()
            } else {
                format!(" ({})", outcome.write_message)
            },
            outcome.readback
        );
    }
    Ok(match outcome.posture {
        proof_acaudit::probe::Posture::ReadOnly => EXIT_OK,
        proof_acaudit::probe::Posture::Writable => EXIT_FAILED,
        proof_acaudit::probe::Posture::Inconclusive => EXIT_UNUSABLE,
    })
}

/// The signed probe result: a DSSE envelope over an in-toto statement
/// whose subject is the canary action and whose predicate is the outcome.
pub fn sign_probe(o: &ProbeOutcome, key: &proof_artifact::SigningKey) -> Result<Vec<u8>> {
    let hash = o.canary_digest.split('/').next().unwrap_or_default();
    let statement = serde_json::json!({
        "_type": proof_artifact::statement::STATEMENT_TYPE,
        "subject": [{"name": "ac-canary-action", "digest": {"sha256": hash}}],
        "predicateType": PROBE_PREDICATE_TYPE,
        "predicate": o,
    });
    let env = proof_artifact::dsse::Envelope::sign(serde_json::to_vec(&statement)?, key);
    Ok(env.to_bytes())
}

/// A signed probe result, verified against `keys`.
pub fn read_probe(path: &Path, keys: &[VerifyingKey]) -> Result<ProbeOutcome> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let env = proof_artifact::dsse::Envelope::parse(&bytes)
        .with_context(|| format!("{} is not a signed probe result", path.display()))?;
    if let Err(e) = env.verify(keys) {
        bail!("{}: signature: {e}", path.display());
    }
    let v: serde_json::Value = serde_json::from_slice(&env.payload)
        .with_context(|| format!("{}: the signed payload is not JSON", path.display()))?;
    if v["predicateType"] != PROBE_PREDICATE_TYPE {
        bail!(
            "{}: predicate type {} is not {PROBE_PREDICATE_TYPE}: not a probe-ac result",
            path.display(),
            v["predicateType"]
        );
    }
    let o: ProbeOutcome = serde_json::from_value(v["predicate"].clone())
        .with_context(|| format!("{}: not a probe-ac outcome", path.display()))?;
    let subject = v["subject"][0]["digest"]["sha256"].as_str().unwrap_or("");
    if !o.canary_digest.starts_with(subject) || subject.is_empty() {
        bail!(
            "{}: the statement's subject does not name its canary",
            path.display()
        );
    }
    Ok(o)
}

/// The E2 section of `proof report`: signed probe results (verified with
/// `keys`) and the last audit's JSON.
pub fn e2_section(
    probes: &[PathBuf],
    audit: Option<&Path>,
    keys: &[VerifyingKey],
) -> Result<proof_acaudit::e2::E2Section> {
    let probes = probes
        .iter()
        .map(|p| read_probe(p, keys))
        .collect::<Result<Vec<_>>>()?;
    let audit: Option<AuditReport> = match audit {
        None => None,
        Some(p) => {
            let text = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            Some(serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{} is not the output of `proof audit --format json`",
                    p.display()
                )
            })?)
        }
    };
    Ok(proof_acaudit::e2::section(probes, audit.as_ref()))
}

/// An audit interval: a humantime duration (`30s`, `5m`, `1h`, `250ms`),
/// longer than 0.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}): use e.g. 30s, 5m, 1h"))?;
    if d.is_zero() {
        return Err("the audit interval must be longer than 0".into());
    }
    Ok(d)
}

/// What the continuous audit of `proof serve` needs.
pub struct Watch {
    pub executor: String,
    pub proofs: PathBuf,
    pub keys: Vec<VerifyingKey>,
    pub manifest: Option<PathBuf>,
    pub interval: std::time::Duration,
    pub concurrency: usize,
    pub metrics: std::sync::Arc<proof_server::Metrics>,
}

/// Starts the continuous audit on a thread of its own: one run now, then
/// one every interval (from the start of the last), for the life of the
/// process.
pub fn start_watch(w: Watch) -> Result<()> {
    let client = AcClient::new(&w.executor, &[])?;
    w.metrics.ac_audit.enable();
    std::thread::Builder::new()
        .name("ac-audit".into())
        .spawn(move || {
            let mut cache = ProofCache::default();
            loop {
            let t = Instant::now();
            let status = &w.metrics.ac_audit;
            let run = load_proofs(&w.proofs, &w.keys, w.manifest.as_deref(), &w.executor, &mut cache)
                .and_then(|(proofs, skipped)| {
                    run_audit(
                        &client,
                        &proofs,
                        skipped,
                        w.concurrency,
                        &|i, d| status.first_seen(i, d),
                        &|_, _| {},
                    )
                });
            match run {
                Ok(mut r) => {
                    r.scope = match &w.manifest {
                        Some(m) => format!("the promoted classes of {}", m.display()),
                        None => format!("the executor-attested proofs of {}", w.proofs.display()),
                    };
                    if r.suspects.is_empty() {
                        tracing::info!(summary = %r.summary, "AC audit");
                    } else {
                        for s in &r.suspects {
                            tracing::warn!(verdict = s.verdict.as_str(), instance = %s.instance_name, action = %s.action_digest, targets = ?s.targets, proofs = ?s.proofs, writer = %s.writer, "AC poison suspect");
                        }
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or_default();
                    status.record(r, now);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "AC audit failed");
                    status.record_failure(format!("{e:#}"));
                }
            }
            std::thread::sleep(w.interval.saturating_sub(t.elapsed()));
            }
        })
        .context("cannot start the AC audit thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
