//! `proof serve` and `proof replay`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use proof_server::{
    proofs::{ProofQueue, ProofWriter, QueueConfig},
    Admission, GrpcConfig, Metrics, OnFinalized, OpenAdmission, TenantAdmission,
};
use proof_store::Store;

use crate::invocations::open_store;
use crate::signing;
use crate::{EXIT_FAILED, EXIT_OK};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// gRPC address of the Build Event Service (Bazel: --bes_backend=grpc://ADDR).
    #[arg(long, default_value = "127.0.0.1:8980")]
    listen: String,
    /// Store: a directory (journals + SQLite index, created if missing) or
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB (shared by replicas; docs/store.md).
    #[arg(long, env = "PROOF_STORE", default_value = "proof-store")]
    store: PathBuf,
    /// Sign the proof artifact of every complete invocation with this key
    /// (PKCS#8 PEM). Default: the store's own key pair, STORE/proof.key and
    /// STORE/proof.pub, created on the first start and never overwritten.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Directory for the proof artifacts (INVOCATION_ID.proof.tar). Default: STORE/proofs.
    #[arg(long)]
    proofs: Option<PathBuf>,
    /// Finalize, as incomplete, a stream that stored nothing for this many
    /// seconds and has no open RPC (Bazel died or gave up); 0 = never.
    #[arg(long = "abandon-after", default_value_t = 3600)]
    abandon_after_secs: u64,
    /// Most tool-event RPCs one peer (IP address) may hold open at once.
    #[arg(long, default_value_t = proof_server::RpcLimits::default().rpcs_per_peer)]
    max_rpcs_per_peer: usize,
    /// Close an RPC that sends no message for this many seconds (Bazel
    /// resumes on a new RPC); its first message must come within 30 s.
    #[arg(long = "idle-timeout", default_value_t = proof_server::RpcLimits::default().idle_timeout.as_secs())]
    idle_timeout_secs: u64,
    /// Largest gRPC message (one event) accepted, in bytes; at most the
    /// default, which is the largest event the store holds plus its envelope.
    #[arg(long, default_value_t = proof_server::DEFAULT_MAX_MESSAGE)]
    max_message_bytes: usize,
    /// Also serve the web pages, JSON API and /metrics on this address (e.g. 127.0.0.1:8981).
    #[arg(long)]
    http: Option<String>,
    /// Target classes for fleet views: PATTERN_PREFIX=CLASS,... (first match wins).
    #[arg(long, default_value = "")]
    target_classes: String,
    /// Execution logs for the web views, named <invocation id>.execlog (binary or compact).
    #[arg(long)]
    execlog_dir: Option<PathBuf>,
    /// Tenants file (TOML, docs/tenants.md): every BES stream and HTTP request
    /// then needs a tenant's bearer token and is held to that tenant's limits.
    #[arg(long)]
    tenants: Option<PathBuf>,
    /// The remote executor the builds use (grpc://HOST:PORT, BuildGrid): when
    /// an invocation finishes, ask it what it ran for that invocation and put
    /// its answers in the proof. Such proofs must pass
    /// `executor_attested`.
    #[arg(long, value_name = "URL")]
    executor: Option<String>,
    /// With --executor: the REAPI instance name(s) to ask under (repeatable;
    /// default: the stream's --remote_instance_name).
    #[arg(long = "executor-instance", value_name = "NAME", requires = "executor")]
    executor_instances: Vec<String>,
    /// With --executor: retry an unreachable executor (exponential backoff
    /// from 0.5 s) for at most this many seconds, then sign a proof that says
    /// it was unreachable (which fails verification).
    #[arg(
        long = "executor-retry-secs",
        value_name = "SECS",
        default_value_t = 30,
        requires = "executor"
    )]
    executor_retry_secs: u64,
    /// With --executor: another address of the same executor, as Bazel
    /// clients name it in --remote_executor (repeatable). A build whose
    /// --remote_executor is neither --executor nor an alias fails
    /// `sources_agree`.
    #[arg(long = "executor-alias", value_name = "URL", requires = "executor")]
    executor_aliases: Vec<String>,
    /// With --executor: stop asking about one invocation after this many
    /// seconds (retries included) and sign a proof that fails
    /// `executor_attested` with the reason.
    #[arg(
        long = "executor-deadline-secs",
        value_name = "SECS",
        default_value_t = proof_executor::Budget::default().max_time.as_secs(),
        requires = "executor"
    )]
    executor_deadline_secs: u64,
    /// With --executor: most MiB of executor answers (operations and
    /// Action/Command blobs) kept for one invocation; beyond it the proof
    /// fails `executor_attested` with the reason.
    #[arg(
        long = "executor-max-mib",
        value_name = "MIB",
        default_value_t = proof_executor::Budget::default().max_bytes / (1024 * 1024),
        requires = "executor"
    )]
    executor_max_mib: usize,
    /// Proofs signed at once, on threads of their own (each may wait on the
    /// executor for up to --executor-deadline-secs).
    #[arg(long, default_value_t = proof_server::proofs::QueueConfig::default().workers)]
    proof_workers: usize,
    /// On SIGTERM/Ctrl-C: /readyz answers 503 and new RPCs are refused at once; open
    /// RPCs may run this many seconds more, then end with UNAVAILABLE (Bazel resumes
    /// them on another replica); then finalizations in flight are finished and it exits.
    #[arg(long = "drain-timeout", value_name = "SECS", default_value_t = 20)]
    drain_timeout_secs: u64,
    /// After the drain, wait at most this many seconds for finalizations and proofs in
    /// flight (what is left is finished by the next start or another replica's sweep).
    #[arg(long = "finalize-timeout", value_name = "SECS", default_value_t = 30)]
    finalize_timeout_secs: u64,
    /// How often the abandon sweep runs, in seconds (it also adopts finished streams a
    /// dead replica left unfinalized). Default: --abandon-after/4, at most 60.
    #[arg(long = "sweep-interval", value_name = "SECS")]
    sweep_interval_secs: Option<u64>,
    /// Retention: every --retention-interval, remove the journals of finalized
    /// invocations received longer ago than this (e.g. 90d), as `proof gc` does.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// With --retention: how often it runs (the first run is at start).
    #[arg(
        long = "retention-interval",
        value_name = "DURATION",
        value_parser = humantime::parse_duration,
        default_value = "1h",
        requires = "retention"
    )]
    retention_interval: Duration,
    /// With --retention: keep every invocation whose proof a class of this manifest
    /// records (re-read at each run; repeatable).
    #[arg(
        long = "retention-keep-manifest",
        value_name = "FILE",
        requires = "retention"
    )]
    retention_keep_manifest: Vec<PathBuf>,
    /// With --executor: audit the executor's ActionCache behind this
    /// server's proofs every DURATION (e.g. 5m): metrics
    /// `proof_ac_*`, page /ac-audit (docs/ac-authority.md).
    #[arg(long, value_name = "DURATION", requires = "executor", value_parser = crate::acaudit::parse_duration)]
    audit_interval: Option<Duration>,
    /// With --audit-interval: audit only the proofs of this manifest's
    /// promoted classes.
    #[arg(long, value_name = "FILE", requires = "audit_interval")]
    audit_manifest: Option<PathBuf>,
    /// The server's URI, named as `verifier.id` in the SLSA verification
    /// summary (ID.vsa.dsse.json) written beside every proof. Default: the
    /// --public-url, else urn:rbe-proof:verifier:KEYID.
    #[arg(long, value_name = "URI")]
    verifier_id: Option<String>,
    /// The base URL users reach this server's web pages at (e.g.
    /// https://proofs.example.com): each VSA's resourceUri is then
    /// URL/invocations/ID instead of urn:rbe-proof:invocation:ID.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Origin (name) of the transparency log every proof is appended to
    /// (STORE/tlog; served at /log/ with --http). Default:
    /// rbe-proof.invalid/log/KEYID16 (the first 16 hex digits of the keyid).
    #[arg(long, value_name = "ORIGIN")]
    log_origin: Option<String>,
}

pub fn serve(a: ServeArgs) -> Result<u8> {
    check_message_limit(&a)?;
    let store: Arc<dyn Store> = open_store(&a.store)?;
    if crate::invocations::is_pg_store(&a.store) && (a.key.is_none() || a.proofs.is_none()) {
        bail!(
            "a PostgreSQL store keeps no key files and no proofs: pass --key KEY (the same \
             private key on every replica) and --proofs DIR (a directory every replica and \
             the CLI can read)"
        );
    }
    let (signing, proofs) = signing_and_proofs(&a)?;
    let keyid = proof_artifact::keyid(&signing.key.verifying_key());
    let executor = ledger_config(&a)?;
    if let Some(older_than) = a.retention {
        start_retention(
            store.clone(),
            older_than,
            a.retention_interval,
            a.retention_keep_manifest.clone(),
            proofs.clone(),
        )?;
    }
    // The web shows each invocation's proof state from its signed proof,
    // verified with this server's public key.
    let web_proofs = proof_web::ProofsConfig {
        dir: proofs.clone(),
        trusted: vec![signing.key.verifying_key()],
    };
    let metrics = Arc::new(Metrics::default());
    if let (Some(interval), Some(url)) = (a.audit_interval, &a.executor) {
        crate::acaudit::start_watch(crate::acaudit::Watch {
            executor: url.clone(),
            proofs: proofs.clone(),
            keys: vec![signing.key.verifying_key()],
            manifest: a.audit_manifest.clone(),
            interval,
            concurrency: 16,
            metrics: metrics.clone(),
        })?;
        outln!(
            "proof serve: auditing the ActionCache of {url} behind the proofs every {} s",
            interval.as_secs_f64()
        );
    }
    let log = Some(open_log(&a, &proofs, &signing, &keyid)?);
    let writer = Arc::new(ProofWriter {
        key: signing.key,
        dir: proofs,
        executor,
        metrics: Some(metrics.clone()),
        vsa: Some(proof_server::vsa::VsaConfig {
            verifier_id: a
                .verifier_id
                .clone()
                .or_else(|| a.public_url.clone())
                .unwrap_or_else(|| format!("urn:rbe-proof:verifier:{keyid}")),
            results_base: a.public_url.clone(),
        }),
        log: log.clone(),
    });
    // Proofs (and executor queries) run on their own threads, never on the
    // pool that stores and acks events; pending ones survive a restart.
    let queue = ProofQueue::start(
        writer,
        store.clone(),
        QueueConfig {
            workers: a.proof_workers.max(1),
            ..QueueConfig::default()
        },
    )
    .context("cannot start the proof queue (its pending markers live in PROOFS/.pending)")?;
    let tenants = match &a.tenants {
        Some(path) => Some(Arc::new(crate::tenants::load(path)?)),
        None => None,
    };
    let served = Served {
        store,
        metrics,
        queue,
        tenants,
        web_proofs,
        log,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(a, served))
}

/// What the servers share once the store, key, proof queue and log are set up.
struct Served {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    queue: Arc<ProofQueue>,
    tenants: Option<Arc<proof_server::tenants::tenancy::Tenants>>,
    web_proofs: proof_web::ProofsConfig,
    log: Option<Arc<proof_tlog::Published>>,
}

/// `--max-message-bytes` above what the store can hold is refused.
fn check_message_limit(a: &ServeArgs) -> Result<()> {
    if a.max_message_bytes > proof_server::DEFAULT_MAX_MESSAGE {
        bail!(
            "--max-message-bytes {} is above {}: the store holds events of at most {} bytes, \
             so bigger messages could never be stored; use a value up to {}",
            a.max_message_bytes,
            proof_server::DEFAULT_MAX_MESSAGE,
            proof_store::MAX_EVENT_BYTES,
            proof_server::DEFAULT_MAX_MESSAGE
        );
    }
    Ok(())
}

/// The signing key (`--key`, or the store's own pair) and the proofs
/// directory (created), with where they are printed.
fn signing_and_proofs(a: &ServeArgs) -> Result<(signing::Signing, PathBuf)> {
    let signing = match &a.key {
        Some(path) => signing::from_file(path)?,
        None => signing::store_key(&a.store)?,
    };
    let proofs = a
        .proofs
        .clone()
        .unwrap_or_else(|| a.store.join(signing::STORE_PROOFS));
    std::fs::create_dir_all(&proofs)
        .with_context(|| format!("cannot create the proofs directory {}", proofs.display()))?;
    let keyid = proof_artifact::keyid(&signing.key.verifying_key());
    outln!(
        "proof serve: signing proofs with {} ({}keyid {keyid})",
        signing.private.display(),
        if signing.created {
            "key pair created now; "
        } else {
            ""
        }
    );
    if let Some(public) = &signing.public {
        outln!("proof serve: public key {}", public.display());
    }
    outln!(
        "proof serve: proofs in {} (check one: proof verify {}/ID.proof.tar --key {})",
        proofs.display(),
        proofs.display(),
        signing
            .public
            .as_ref()
            .map_or_else(|| "PUBLIC_KEY".to_string(), |p| p.display().to_string())
    );
    Ok((signing, proofs))
}

/// `--executor`: how the proof writer asks the executor for its ledger.
fn ledger_config(a: &ServeArgs) -> Result<Option<proof_server::proofs::LedgerConfig>> {
    let Some(url) = &a.executor else {
        return Ok(None);
    };
    outln!("proof serve: every proof holds what the executor {url} ran for its invocation");
    Ok(Some(proof_server::proofs::LedgerConfig {
        ledger: Arc::new(proof_executor::BuildGrid::new(url).context("bad --executor")?),
        instance_names: a.executor_instances.clone(),
        endpoint_aliases: a.executor_aliases.clone(),
        retry: proof_executor::Retry {
            total: Duration::from_secs(a.executor_retry_secs),
            first_delay: Duration::from_millis(500),
        },
        budget: proof_executor::Budget {
            max_time: Duration::from_secs(a.executor_deadline_secs.max(1)),
            max_bytes: a.executor_max_mib.max(1).saturating_mul(1024 * 1024),
            ..proof_executor::Budget::default()
        },
    }))
}

/// The transparency log: in the database for a PostgreSQL store (one log
/// for every replica), else in STORE/tlog.
fn open_log(
    a: &ServeArgs,
    proofs: &std::path::Path,
    signing: &signing::Signing,
    keyid: &str,
) -> Result<Arc<proof_tlog::Published>> {
    let origin = a
        .log_origin
        .clone()
        .unwrap_or_else(|| format!("rbe-proof.invalid/log/{}", &keyid[..16.min(keyid.len())]));
    let log = if crate::invocations::is_pg_store(&a.store) {
        // Every replica appends to one log in the database; the latest
        // checkpoint file goes to the shared proofs directory.
        let url = a.store.to_string_lossy().into_owned();
        let pg = proof_store_pg::PgStore::connect(&url)?;
        let shared = proof_store_pg::tlog::PgLeaves::open(pg)
            .and_then(|l| proof_tlog::SharedLog::open(Box::new(l)))
            .map_err(anyhow::Error::msg)?;
        let dir = proofs.join(".tlog");
        proof_tlog::Published::open_shared(shared, &dir, &origin, signing.key.clone())
            .with_context(|| format!("cannot start the transparency log ({})", dir.display()))?
    } else {
        let dir = a.store.join("tlog");
        proof_tlog::Published::open(&dir, &origin, signing.key.clone())
            .with_context(|| format!("cannot open the transparency log in {}", dir.display()))?
    };
    outln!(
        "proof serve: transparency log {origin} ({} proofs; verifier key {})",
        log.log.with_tree(|t| t.size()),
        proof_tlog::note_verifier_key(&origin, &signing.key.verifying_key())
    );
    Ok(log)
}

/// Runs the gRPC and HTTP servers until a signal, then drains.
async fn run(a: ServeArgs, served: Served) -> Result<u8> {
    let Served {
        store,
        metrics,
        queue,
        tenants,
        web_proofs,
        log,
    } = served;
    let proof_queue = queue.clone();
    let on_finalized: Option<Arc<dyn OnFinalized>> = Some(queue);
    let admission: Arc<dyn Admission> = match &tenants {
        Some(t) => Arc::new(TenantAdmission::new(t.clone())),
        None => Arc::new(OpenAdmission),
    };
    let (listener, addr) = proof_server::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    if let (Some(path), Some(t)) = (&a.tenants, &tenants) {
        outln!(
            "proof serve: {} tenant(s) from {}; streams and HTTP requests need a bearer token",
            t.tenants().len(),
            path.display()
        );
    }
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = match &a.http {
        Some(addr) => {
            let web = proof_web::WebConfig {
                store: store.clone(),
                metrics: metrics.clone(),
                classes: proof_kpi::fleet::TargetClassMap::parse(&a.target_classes)
                    .context("--target-classes must be PATTERN_PREFIX=CLASS,...")?,
                execlog_dir: a.execlog_dir.clone(),
                proofs: Some(web_proofs),
            };
            Some(start_http(addr, web, tenants.clone(), log.clone(), http_stopped).await?)
        }
        None => None,
    };
    // Printed once the HTTP side listens too: whoever waits for this line
    // (a supervisor, the tests) finds both servers up.
    outln!(
        "proof serve: BES listening on grpc://{addr} (store {})",
        crate::invocations::store_display(&a.store)
    );
    let cfg = GrpcConfig {
        store,
        metrics,
        on_finalized,
        admission,
        max_message: a.max_message_bytes,
        abandon_after: (a.abandon_after_secs > 0)
            .then(|| Duration::from_secs(a.abandon_after_secs)),
        limits: proof_server::RpcLimits {
            rpcs_per_peer: a.max_rpcs_per_peer.max(1),
            idle_timeout: Duration::from_secs(a.idle_timeout_secs.max(1)),
            ..Default::default()
        },
    };
    let finalize_bound = Duration::from_secs(a.finalize_timeout_secs);
    let drain = proof_server::DrainOptions {
        drain: proof_server::drain::Drain::with_metrics(cfg.metrics.clone()),
        bound: Duration::from_secs(a.drain_timeout_secs),
        finalize_bound,
        sweep_every: a.sweep_interval_secs.map(|s| Duration::from_secs(s.max(1))),
    };
    let report = proof_server::serve_grpc_drained(listener, cfg, drain, shutdown_signal())
        .await
        .context("the gRPC server failed")?;
    if let Some(r) = report {
        // Proofs queued by the last finalizations: signed now if they can be
        // (their pending markers survive anyway).
        let idle = tokio::task::spawn_blocking(move || proof_queue.wait_idle(finalize_bound))
            .await
            .unwrap_or(false);
        outln!(
            "proof serve: drained in {:.1}s: {} RPC(s) open at the signal, {} ended with UNAVAILABLE at the {}s bound, {} finalization(s) finished{}",
            r.elapsed.as_secs_f64(),
            r.rpcs_at_start,
            r.rpcs_cut,
            a.drain_timeout_secs,
            r.finalizations_waited,
            if idle { "" } else { "; proofs still pending (signed at the next start)" }
        );
    }
    let _ = stop_http.send(());
    if let Some(h) = http {
        h.await?.context("the HTTP server failed")?;
    }
    eprintln!("proof serve: stopped");
    Ok(EXIT_OK)
}

/// `--http`: the web pages, JSON API, `/metrics` and `/log/*`, until `stop`.
async fn start_http(
    addr: &str,
    web: proof_web::WebConfig,
    tenants: Option<Arc<proof_server::tenants::tenancy::Tenants>>,
    log: Option<Arc<proof_tlog::Published>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let (l, bound) = proof_server::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--http)"))?;
    outln!("proof serve: HTTP on http://{bound}");
    Ok(tokio::spawn(proof_web::serve_http_with_log(
        l,
        web,
        tenants,
        log,
        async move {
            let _ = stop.await;
        },
    )))
}

/// `serve --retention`: a thread of its own runs `proof gc` every `interval`.
fn start_retention(
    store: Arc<dyn Store>,
    older_than: Duration,
    interval: Duration,
    keep_manifests: Vec<PathBuf>,
    proofs: PathBuf,
) -> Result<()> {
    outln!(
        "proof serve: retention: journals of finalized invocations older than {} are removed every {}",
        humantime::format_duration(older_than),
        humantime::format_duration(interval)
    );
    std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || loop {
            let mut keep = std::collections::HashSet::new();
            let mut ok = true;
            for m in &keep_manifests {
                match crate::retention::manifest_ids(m) {
                    Ok(ids) => keep.extend(ids),
                    Err(e) => {
                        // Never remove what an unreadable manifest might keep.
                        tracing::error!(error = %format!("{e:#}"), "retention skipped: cannot read the manifest");
                        ok = false;
                    }
                }
            }
            if ok {
                let opts = proof_server::retention::GcOptions {
                    older_than,
                    dry_run: false,
                    keep,
                    proofs_dir: Some(proofs.clone()),
                    now_ms: crate::invocations::now_ms(),
                };
                match proof_server::retention::gc(store.as_ref(), &opts, &mut |_| {}) {
                    Ok(r) => tracing::info!(
                        examined = r.examined,
                        removed = r.removed,
                        freed_bytes = r.freed_bytes,
                        kept_open = r.kept_open,
                        kept_manifest = r.kept_manifest,
                        kept_proof_pending = r.kept_proof_pending,
                        "retention run"
                    ),
                    Err(e) => tracing::error!(error = %e, "retention run failed"),
                }
            }
            std::thread::sleep(interval.max(Duration::from_secs(1)));
        })
        .context("cannot start the retention thread")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A --build_event_binary_file or --build_event_json_file.
    file: PathBuf,
    /// The BES backend, grpc://HOST:PORT.
    #[arg(long)]
    to: String,
    /// Invocation id to send under (default: the file's BuildStarted uuid).
    #[arg(long)]
    invocation_id: Option<String>,
    /// Build id (default: a fixed id derived from the invocation id).
    #[arg(long)]
    build_id: Option<String>,
    /// --bes_instance_name to send as project_id.
    #[arg(long, default_value = "")]
    instance: String,
    /// Request header NAME=VALUE (repeatable), e.g. authorization=Bearer TOKEN.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Fault: break the RPC after N events were sent on it (repeatable).
    #[arg(long = "disconnect-after")]
    disconnect_after: Vec<u64>,
    /// Fault: on each retry also re-send N events that were already acked.
    #[arg(long, default_value_t = 0)]
    resend_acked: u64,
    /// Retries after a failed RPC (Bazel's default is 4).
    #[arg(long, default_value_t = 4)]
    max_retries: u32,
    /// First retry delay in milliseconds (then ×1.6 each time, as Bazel).
    #[arg(long, default_value_t = 1000)]
    backoff_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn replay(a: ReplayArgs) -> Result<u8> {
    let f = std::fs::File::open(&a.file)
        .with_context(|| format!("cannot open {}", a.file.display()))?;
    let events: Vec<Bytes> =
        proof_stream::bepfile::BepFileReader::open(std::io::BufReader::new(f))?
            .map(|e| e.map(Bytes::from))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read {}", a.file.display()))?;
    let first = events.first().context("the file has no events")?;
    let started = proof_stream::probe::probe(first)?.started_uuid;
    let invocation_id = a
        .invocation_id
        .or(started)
        .context("the first event is not BuildStarted; pass --invocation-id")?;
    let headers = a
        .headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .with_context(|| format!("--header {h:?} is not NAME=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = proof_server::replay::ReplayOptions {
        target: a.to,
        build_id: a
            .build_id
            .unwrap_or_else(|| format!("replay-{invocation_id}")),
        invocation_id,
        project_id: a.instance,
        headers,
        max_retries: a.max_retries,
        backoff: Duration::from_millis(a.backoff_ms),
        faults: proof_server::replay::Faults {
            disconnect_after: a.disconnect_after,
            resend_acked: a.resend_acked,
        },
        finish: true,
    };
    let rt = tokio::runtime::Runtime::new()?;
    match rt.block_on(proof_server::replay::replay(events, &opts)) {
        Ok(report) => {
            let runs = ack_runs(&report.acked);
            if a.json {
                let v = serde_json::json!({
                    "invocation_id": opts.invocation_id,
                    "events": report.events,
                    "rpcs": report.rpcs,
                    "acks": report.acked.len(),
                    "distinct_acked": distinct(&report.acked),
                    "acked_ranges": runs,
                });
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                outln!(
                    "replayed {} events of {} in {} RPC(s); {} acks: {}",
                    report.events,
                    opts.invocation_id,
                    report.rpcs,
                    report.acked.len(),
                    runs.iter()
                        .map(|[a, b]| if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("proof: replay failed: {e}");
            Ok(EXIT_FAILED)
        }
    }
}

/// The acks in the order they came, as runs of consecutive sequence numbers
/// `[first, last]`: one run for a clean stream, a new run where a retry
/// re-acked events (`[[1, 120], [96, 300]]`).
fn ack_runs(acked: &[u64]) -> Vec<[u64; 2]> {
    let mut runs: Vec<[u64; 2]> = Vec::new();
    for &seq in acked {
        match runs.last_mut() {
            Some(run) if run[1].checked_add(1) == Some(seq) => run[1] = seq,
            _ => runs.push([seq, seq]),
        }
    }
    runs
}

fn distinct(acked: &[u64]) -> usize {
    acked
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_reported_as_runs() {
        assert_eq!(ack_runs(&[]), Vec::<[u64; 2]>::new());
        let clean: Vec<u64> = (1..=56_381).collect();
        assert_eq!(ack_runs(&clean), vec![[1, 56_381]]);
        let resent: Vec<u64> = (1..=120).chain(96..=300).chain([300]).collect();
        assert_eq!(ack_runs(&resent), vec![[1, 120], [96, 300], [300, 300]]);
        assert_eq!(distinct(&resent), 300);
    }
}
