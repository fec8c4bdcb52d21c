//! `proof keygen | record | verify`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proof_artifact::Policy;

use crate::{EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE};

pub fn keygen(prefix: &Path) -> Result<u8> {
    let (private_pem, public_pem) = proof_artifact::generate()?;
    let key_path = with_suffix(prefix, "key");
    let pub_path = with_suffix(prefix, "pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!(
                "{} already exists; refusing to overwrite a key (remove it or pick another --out)",
                p.display()
            );
        }
    }
    crate::signing::write_private(&key_path, private_pem.as_bytes())?;
    std::fs::write(&pub_path, public_pem.as_bytes())
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    let vk = proof_artifact::load_public_pem(&public_pem)?;
    outln!(
        "private key: {}\npublic key:  {}\nkeyid:       {}",
        key_path.display(),
        pub_path.display(),
        proof_artifact::keyid(&vk)
    );
    Ok(EXIT_OK)
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The evidence as JSON, with the headline facts also at the top level
/// (`remote_executor`, `executor_forced`, `remote_executions`) so CI
/// scripts need not know the nested layout.
pub fn evidence_json(ev: &proof_artifact::Evidence) -> serde_json::Value {
    let mut v = serde_json::to_value(ev).expect("Evidence serializes");
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "remote_executor".into(),
            serde_json::json!(ev.executor.remote_executor),
        );
        o.insert(
            "executor_forced".into(),
            serde_json::json!(ev.executor.forced),
        );
        o.insert(
            "remote_executions".into(),
            serde_json::json!(ev.processes.remote_executions.unwrap_or(0)),
        );
    }
    v
}

#[derive(clap::Args)]
pub struct RecordArgs {
    /// The build's --build_event_binary_file or --build_event_json_file.
    bep: PathBuf,
    /// The build's execution log (--execution_log_binary_file or --execution_log_compact_file).
    #[arg(long)]
    execlog: Option<PathBuf>,
    /// Signing key (PKCS#8 PEM, from `proof keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Output directory for INVOCATION_ID.proof.tar.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
    /// The build's --experimental_remote_grpc_log (stored as remote_grpc.log;
    /// the action digests of Bazel 4.x come from it).
    #[arg(long, value_name = "FILE")]
    remote_grpc_log: Option<PathBuf>,
    /// Ask this executor's ActionCache (grpc://HOST:PORT) about a sample of
    /// the build's remote action digests and store its raw answers.
    #[arg(long, value_name = "URL")]
    corroborate: Option<String>,
    /// With --corroborate: the REAPI instance name to ask under (default:
    /// the build's --remote_instance_name).
    #[arg(long, value_name = "NAME", requires = "corroborate")]
    corroborate_instance: Option<String>,
    /// With --corroborate: how many action digests to ask about (sorted,
    /// evenly spaced).
    #[arg(long, value_name = "N", default_value_t = proof_evidence::DEFAULT_SAMPLE_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..), requires = "corroborate")]
    sample: u64,
    /// The tenant this trusted offline job records the build for (stored as
    /// the proof's origin; without it the proof is unauthenticated).
    #[arg(long, value_name = "ID")]
    tenant: Option<String>,
    /// Ask this executor (grpc://HOST:PORT, BuildGrid) what it ran for the
    /// build's invocation and store its raw answers (executor.bin), as
    /// `proof serve --executor` does: the proof then needs
    /// `executor_attested` and `outputs_bound`. The window is the build's
    /// own BuildStarted/BuildFinished times (an offline proof has no server
    /// receive times), and remote cache hits stay unbound (no index of
    /// attested results offline).
    #[arg(long, value_name = "URL")]
    executor: Option<String>,
    /// With --executor: the REAPI instance name(s) to ask under
    /// (repeatable; default: the build's --remote_instance_name).
    #[arg(long = "executor-instance", value_name = "NAME", requires = "executor")]
    executor_instances: Vec<String>,
    /// With --executor: another address of the same executor, as the build
    /// named it in --remote_executor (repeatable).
    #[arg(long = "executor-alias", value_name = "URL", requires = "executor")]
    executor_aliases: Vec<String>,
}

/// An evidence builder fed every event of the BEP file at `bep`.
fn bep_evidence(bep: &Path) -> Result<proof_evidence::EvidenceBuilder> {
    let f = std::fs::File::open(bep).with_context(|| format!("cannot open {}", bep.display()))?;
    let events =
        proof_stream::bepfile::BepFileReader::open(std::io::BufReader::with_capacity(1 << 20, f))
            .with_context(|| format!("cannot read {}", bep.display()))?;
    let mut b = proof_evidence::EvidenceBuilder::new();
    for e in events {
        b.push_event(&e.with_context(|| format!("cannot read {}", bep.display()))?)?;
    }
    Ok(b)
}

/// The executor's ledger for the build in `a.bep` (`--executor`), as
/// executor.bin bytes: never fails once the BEP is read (an unreachable
/// executor is recorded as such, after 30 s of retries).
fn ledger_bytes(a: &RecordArgs, endpoint: &str) -> Result<Vec<u8>> {
    let b = bep_evidence(&a.bep)?;
    let ev = b.finish()?;
    let instance_names = if a.executor_instances.is_empty() {
        vec![ev.executor.remote_instance_name.unwrap_or_default()]
    } else {
        a.executor_instances.clone()
    };
    let ledger = proof_executor::BuildGrid::new(endpoint)
        .with_context(|| format!("bad --executor {endpoint:?}; expected grpc://HOST:PORT"))?;
    let q = proof_executor::LedgerQuery {
        invocation_id: ev.invocation_id.clone(),
        instance_names,
        endpoint_aliases: a.executor_aliases.clone(),
        budget: proof_executor::Budget::default(),
    };
    eprintln!(
        "asking {endpoint} what it ran for invocation {} (at most {} s)",
        ev.invocation_id,
        q.budget.max_time.as_secs()
    );
    Ok(proof_executor::fetch_with_retry(
        &ledger,
        &q,
        proof_executor::Retry::default(),
    ))
}

/// The executor's raw answers for `a.corroborate`, as corroboration.bin bytes.
fn corroboration_bytes(a: &RecordArgs, endpoint: &str) -> Result<Vec<u8>> {
    let mut b = bep_evidence(&a.bep)?;
    for (path, grpc) in [(&a.execlog, false), (&a.remote_grpc_log, true)] {
        if let Some(p) = path {
            let f = std::io::BufReader::new(
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            );
            if grpc {
                b.push_remote_grpc_log(f)?;
            } else {
                b.push_exec_log(f)?;
            }
        }
    }
    let (_, candidates) = b.corroboration_candidates();
    let ev = b.finish()?;
    let instance = a
        .corroborate_instance
        .clone()
        .or(ev.executor.remote_instance_name)
        .unwrap_or_default();
    if candidates.is_empty() {
        eprintln!("warning: no remote action digest is known (Bazel 4.x: pass --remote-grpc-log); the corroboration will be empty and fail --require-corroboration");
    }
    Ok(proof_corroborate::corroborate_blocking(
        endpoint,
        &instance,
        usize::try_from(a.sample).unwrap_or(usize::MAX),
        &candidates,
    )?)
}

pub fn record(a: RecordArgs) -> Result<u8> {
    let key = crate::signing::load_signing_key(&a.key)?;
    let f =
        std::fs::File::open(&a.bep).with_context(|| format!("cannot open {}", a.bep.display()))?;
    let mut events =
        proof_stream::bepfile::BepFileReader::open(std::io::BufReader::with_capacity(1 << 20, f))
            .with_context(|| format!("cannot read {}", a.bep.display()))?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let corroboration = match &a.corroborate {
        Some(endpoint) => Some(corroboration_bytes(&a, endpoint)?),
        None => None,
    };
    let executor_ledger = match &a.executor {
        Some(endpoint) => Some(ledger_bytes(&a, endpoint)?),
        None => None,
    };
    let origin = proof_evidence::Origin {
        recorded_by: "proof record".into(),
        tenant: a.tenant.clone(),
        opened_at_ms: None,
        signed_at_ms: None,
    };
    let inputs = proof_artifact::RecordInputs {
        exec_log: a.execlog.as_deref(),
        remote_grpc_log: a.remote_grpc_log.as_deref(),
        corroboration: corroboration.as_deref(),
        executor_ledger: executor_ledger.as_deref(),
        origin: Some(&origin),
        ..Default::default()
    };
    let out = proof_artifact::record_with(&mut events, &inputs, &key, &a.out)
        .with_context(|| format!("cannot record a proof from {}", a.bep.display()))?;
    crate::invocations::print_warnings(&a.bep, events.warnings());
    if a.json {
        outln!(
            "{}",
            serde_json::json!({"path": out.path, "invocation_id": out.invocation_id, "artifact_sha256": out.artifact_sha256, "evidence": evidence_json(&out.evidence), "warnings": events.warnings()})
        );
    } else {
        outln!(
            "wrote {} (sha256 {})",
            out.path.display(),
            out.artifact_sha256
        );
        let ev = &out.evidence;
        outln!(
            "  remote executor: {}  forced: {}  remote executions: {}  images: {}",
            ev.executor.remote_executor.as_deref().unwrap_or("(none)"),
            ev.executor.forced,
            ev.processes
                .remote_executions
                .map_or("unknown".to_string(), |n| n.to_string()),
            ev.worker_images
                .iter()
                .map(|i| i.image.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(EXIT_OK)
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Proof artifacts (INVOCATION_ID.proof.tar); none with --manifest.
    artifacts: Vec<PathBuf>,
    /// Trusted public key(s) (SPKI PEM); repeatable.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Print {"ok", "checks", "evidence"} as JSON (an array for several artifacts).
    #[arg(long, conflicts_with = "manifest")]
    json: bool,
    /// Manifest mode (the PR check): check the RBE eligibility manifest
    /// against the artifacts in --proofs.
    #[arg(long, conflicts_with = "artifacts", requires = "proofs")]
    manifest: Option<PathBuf>,
    /// With --manifest: the directory holding the proof artifacts.
    #[arg(long, requires = "manifest")]
    proofs: Option<PathBuf>,
    /// With --manifest: the newest proof of each executor-backed or default class must be at most DAYS old.
    #[arg(long, value_name = "DAYS", requires = "manifest")]
    max_age: Option<u64>,
    /// Also require a read-only lane: --noremote_upload_local_results and no
    /// UpdateActionResult call in the recorded remote gRPC log.
    #[arg(long, conflicts_with = "manifest")]
    require_read_only: bool,
    /// Also require this effective --remote_instance_name.
    #[arg(long, value_name = "NAME", conflicts_with = "manifest")]
    require_instance: Option<String>,
    /// Also require that no external input was fetched from the network.
    #[arg(long, conflicts_with = "manifest")]
    require_pinned_inputs: bool,
    /// Also require the executor's ActionCache to corroborate the sampled actions.
    #[arg(long, conflicts_with = "manifest")]
    require_corroboration: bool,
    /// Also require the executor's own ledger (`proof serve --executor`) to
    /// attest the build (always required for artifacts that carry one).
    #[arg(long, conflicts_with = "manifest")]
    require_executor_attestation: bool,
    /// With --manifest: the tenants file of the server that signed the
    /// proofs (each proof's tenant must own its class's repo).
    #[arg(long, value_name = "FILE", requires = "manifest")]
    tenants: Option<PathBuf>,
    /// With --manifest: the manifest at the PR's base revision. Its
    /// `allow_unauthenticated_proofs` is the one that counts, and a PR that
    /// changes it fails the check.
    #[arg(long, value_name = "FILE", requires = "manifest")]
    base_manifest: Option<PathBuf>,
    /// With --manifest: output format.
    #[arg(long, value_enum, default_value_t = crate::manifest::CheckFormat::Text, requires = "manifest")]
    format: crate::manifest::CheckFormat,
    #[command(flatten)]
    pub vsa: crate::vsa::VsaOutArgs,
    /// Also require the proof to be in the server's transparency log: its
    /// inclusion sidecar ID.tlog.json (beside the artifact) proves the
    /// statement is a leaf of a checkpoint signed by --key.
    #[arg(long, conflicts_with = "manifest")]
    require_log: bool,
}

pub fn verify(a: VerifyArgs) -> Result<u8> {
    if let Some(manifest) = &a.manifest {
        return crate::manifest::verify_manifest(
            manifest,
            a.proofs.as_deref(),
            &a.keys,
            a.max_age,
            a.format,
            a.tenants.as_deref(),
            a.base_manifest.as_deref(),
        );
    }
    if a.artifacts.is_empty() {
        bail!("name at least one artifact to verify, or check a manifest with --manifest FILE --proofs DIR");
    }
    let keys = crate::signing::load_verifying_keys(&a.keys)?;
    let mut policy = Policy::default();
    if a.require_read_only {
        policy = policy.check(proof_artifact::PolicyCheck::ReadOnly);
    }
    if let Some(name) = &a.require_instance {
        policy = policy.check(proof_artifact::PolicyCheck::Instance(name.clone()));
    }
    if a.require_pinned_inputs {
        policy = policy.check(proof_artifact::PolicyCheck::PinnedInputs);
    }
    if a.require_corroboration {
        policy = policy.check(proof_artifact::PolicyCheck::Corroborated);
    }
    if a.require_executor_attestation {
        policy = policy.check(proof_artifact::PolicyCheck::ExecutorAttested);
    }
    let vsa = a.vsa.prepare(&a.artifacts)?;
    let mut worst = EXIT_OK;
    let mut json_out = Vec::new();
    for path in &a.artifacts {
        match proof_artifact::verify_path(path, &keys, &policy) {
            Ok(mut report) => {
                if a.require_log {
                    let c = crate::log::logged_check(path, &keys, report.ok);
                    report.ok &= c.ok;
                    report.checks.push(c);
                }
                if let Some(vsa) = &vsa {
                    vsa.write(path, &report, &policy)?;
                }
                if !report.ok {
                    worst = worst.max(EXIT_FAILED);
                }
                if a.json {
                    json_out.push(serde_json::json!({
                        "artifact": path,
                        "ok": report.ok,
                        "checks": report.checks,
                        "evidence": report.evidence.as_ref().map(evidence_json),
                        "artifact_sha256": report.artifact_sha256,
                    }));
                } else {
                    outln!(
                        "{}: {}",
                        path.display(),
                        if report.ok { "PASS" } else { "FAIL" }
                    );
                    for c in &report.checks {
                        outln!(
                            "  {} {:<18} {}",
                            if c.ok { "pass" } else { "FAIL" },
                            c.name,
                            c.detail
                        );
                    }
                }
            }
            Err(e) => {
                worst = EXIT_UNUSABLE;
                if a.json {
                    json_out.push(serde_json::json!({"artifact": path, "ok": false, "error": e.to_string(), "checks": [], "evidence": null}));
                } else {
                    outln!("{}: UNUSABLE: {e}", path.display());
                }
            }
        }
    }
    if a.json {
        let v = if json_out.len() == 1 {
            json_out.remove(0)
        } else {
            serde_json::Value::Array(json_out)
        };
        outln!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(worst)
}
