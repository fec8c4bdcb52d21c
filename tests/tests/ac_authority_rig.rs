//! Action-cache authority (issue 22) on real Bazel (Debian's 4.2.3) and a
//! real BuildGrid:
//! - a real remote build's proof, then `proof audit` against the rig's
//!   ActionCache: exit 0, every entry `same`;
//! - the attack of the issue: a client with AC write access points the
//!   entry of `//:hello` at another blob, keeping the worker name and every
//!   other field (`UpdateActionResult`) → `proof audit` exits 1 naming
//!   exactly that action and its target; restored → exit 0;
//! - `proof probe-ac` writes a canary on the writable instance (exit 1) and
//!   the audit still sees every real entry `same`; on the read-only
//!   instance of the rig's template (a BuildGrid of the test's own) it is
//!   denied (exit 0), and its signed result feeds `proof report`'s E2
//!   section;
//! - an unreachable executor → exit 2 with a clear message; a hostile
//!   executor answering oversized or absurd ActionResults → bounded, no
//!   panic.
//!
//! Needs the rig: `bash tests/run-all.sh`, or start it and
//! `cd WORKTREE && . /work/rig-env.sh`-style exports (tests/run-all.sh).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proof_e2e::{
    action_nonce, bep_invocation_id, keypair, proof_bin, rig, wait_for_proof, Rig, Server,
};
use proof_executor::ac::{block_on, parse_digest, AcAsk, AcClient};
use proof_proto::reapi::action_cache_server::{ActionCache, ActionCacheServer};
use proof_proto::reapi::{
    ActionResult, Digest, ExecutedActionMetadata, GetActionResultRequest, OutputFile,
    UpdateActionResultRequest,
};

/// `proof ARGS`: (exit code, stdout, stderr), printed.
fn proof(args: &[&str]) -> (i32, String, String) {
    let t = Instant::now();
    let out = Command::new(proof_bin()).args(args).output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!(
        "proof {} -> {:?} in {:.2}s\n{o}{e}",
        args.join(" "),
        out.status.code(),
        t.elapsed().as_secs_f64()
    );
    (out.status.code().unwrap_or(-1), o, e)
}

fn audit_json(executor: &str, proofs: &Path, public: &Path) -> (i32, serde_json::Value, String) {
    let (code, out, err) = proof(&[
        "audit",
        "--executor",
        executor,
        "--proofs",
        proofs.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    (code, v, err)
}

/// A real remote build of a fresh copy of the spoke, every action executed.
fn remote_build(rig: &Rig, ws: &Path, bes: &str, bep: &Path) {
    rig.spoke(ws);
    let out = rig.bazel(
        ws,
        &[
            "build",
            "--config=proof",
            "//...",
            &format!("--bes_backend={bes}"),
            "--noremote_accept_cached",
            &action_nonce("ACAUDIT"),
            "--build_metadata=REPO=acme/payments-api",
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    rig.shutdown(ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    assert!(out.output.contains("8 remote"), "{}", out.output);
}

/// A hostile ActionCache: mode 0 answers an 8 MiB ActionResult, mode 1 an
/// absurd one (50 000 outputs with non-hex digests, a stranger's worker
/// name, exit code -1), mode 2 never answers.
struct Hostile(Arc<AtomicU8>);

#[tonic::async_trait]
impl ActionCache for Hostile {
    async fn get_action_result(
        &self,
        _: tonic::Request<GetActionResultRequest>,
    ) -> Result<tonic::Response<ActionResult>, tonic::Status> {
        let r = match self.0.load(Ordering::SeqCst) {
            0 => ActionResult {
                stdout_raw: vec![b'x'; 8 * 1024 * 1024],
                ..Default::default()
            },
            1 => ActionResult {
                output_files: (0..50_000)
                    .map(|i| OutputFile {
                        path: format!("../../etc/{i}\n|"),
                        digest: Some(Digest {
                            hash: "not-hex|".into(),
                            size_bytes: -1,
                        }),
                        ..Default::default()
                    })
                    .collect(),
                exit_code: -1,
                execution_metadata: Some(ExecutedActionMetadata {
                    worker: "evil\u{202e}bot".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            _ => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                ActionResult::default()
            }
        };
        Ok(tonic::Response::new(r))
    }

    async fn update_action_result(
        &self,
        _: tonic::Request<UpdateActionResultRequest>,
    ) -> Result<tonic::Response<ActionResult>, tonic::Status> {
        Err(tonic::Status::permission_denied("hostile"))
    }
}

/// Not an ActionResult: field 2 (ActionResult.output_files, a message) as a
/// varint, so the client's decoding fails.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "2")]
    output_files_as_varint: u64,
}

/// An ActionCache whose GetActionResult answers [`Malformed`] bytes.
#[derive(Clone)]
struct MalformedCache;

impl tonic::server::NamedService for MalformedCache {
    const NAME: &'static str = "build.bazel.remote.execution.v2.ActionCache";
}

struct MalformedAnswer;

impl tonic::server::UnaryService<GetActionResultRequest> for MalformedAnswer {
    type Response = Malformed;
    type Future = std::future::Ready<Result<tonic::Response<Malformed>, tonic::Status>>;
    fn call(&mut self, _: tonic::Request<GetActionResultRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(Malformed {
            output_files_as_varint: 7,
        })))
    }
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for MalformedCache {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<Malformed, GetActionResultRequest>::default();
            Ok(tonic::server::Grpc::new(codec)
                .unary(MalformedAnswer, req)
                .await)
        })
    }
}

/// Starts the malformed ActionCache on `listener` in a thread of its own.
fn start_malformed(listener: std::net::TcpListener) {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                tonic::transport::Server::builder()
                    .add_service(MalformedCache)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                    .await
                    .unwrap();
            });
    });
}

/// Starts the hostile ActionCache on `listener` in a thread of its own.
fn start_hostile(listener: std::net::TcpListener, mode: Arc<AtomicU8>) {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                tonic::transport::Server::builder()
                    .add_service(ActionCacheServer::new(Hostile(mode)))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                    .await
                    .unwrap();
            });
    });
}

fn entry_with_target<'a>(report: &'a serde_json::Value, target: &str) -> &'a serde_json::Value {
    let hits: Vec<&serde_json::Value> = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["targets"].as_array().unwrap().iter().any(|t| t == target))
        .collect();
    assert_eq!(hits.len(), 1, "one action makes {target}: {report:#}");
    hits[0]
}

/// The continuous audit's interval in this test.
const INTERVAL: Duration = Duration::from_secs(3);

/// `proof_ac_poison_suspects{instance_name="NAME"}` on /metrics.
fn suspects_metric(http: &str, instance: &str) -> Option<u64> {
    let (status, body) = proof_e2e::http_get(http, "/metrics", None);
    assert_eq!(status, 200);
    let key = format!("proof_ac_poison_suspects{{instance_name=\"{instance}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .map(|v| v.trim().parse().unwrap())
}

/// Polls /metrics (every 100 ms, at most 60 s) until `instance` shows `n`
/// suspects; returns how long it took.
fn wait_for_suspects(http: &str, instance: &str, n: u64) -> Duration {
    let t = Instant::now();
    loop {
        if suspects_metric(http, instance) == Some(n) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no proof_ac_poison_suspects {n} within 60 s:\n{}",
            proof_e2e::http_get(http, "/metrics", None).1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of the example manifest in `dir` that accepts unauthenticated
/// proofs (the test's server has no tenants file), with `proof` promoted
/// into class payments-api/package (cache-first, so promotion makes it
/// executor-backed).
fn manifest_with(dir: &Path, proof_file: &Path, public: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        proof_e2e::repo_root().join("examples/platform/config/rbe-target-eligibility.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = serde_json::Map::new();
    for (k, val) in v.as_object().unwrap() {
        if k == "allow_unauthenticated_proofs" {
            continue;
        }
        out.insert(k.clone(), val.clone());
        if k == "schema_version" {
            out.insert("allow_unauthenticated_proofs".into(), true.into());
        }
    }
    let path = dir.join("manifest.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::Value::Object(out)).unwrap() + "\n",
    )
    .unwrap();
    let (code, _, err) = proof(&[
        "promote",
        proof_file.to_str().unwrap(),
        "--manifest",
        path.to_str().unwrap(),
        "--class",
        "payments-api/package",
        "--key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    path
}

#[test]
fn the_audit_names_a_rewritten_ac_entry_and_clears_when_restored() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let proofs = tmp.path().join("proofs");
    // A port for the hostile executor, declared as an alias of the rig's
    // executor (as an operator declares another address of it).
    let hostile = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hostile_ep = format!("grpc://{}", hostile.local_addr().unwrap());
    let malformed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let malformed_ep = format!("grpc://{}", malformed.local_addr().unwrap());
    let server = Server::start(
        "127.0.0.1:0",
        &tmp.path().join("store"),
        &[
            "--key",
            key.to_str().unwrap(),
            "--proofs",
            proofs.to_str().unwrap(),
            "--executor",
            &rig.remote_executor,
            "--executor-alias",
            &hostile_ep,
            "--executor-alias",
            &malformed_ep,
            "--http",
            "127.0.0.1:0",
            "--audit-interval",
            &format!("{}s", INTERVAL.as_secs()),
        ],
    );
    let http = server.printed("HTTP on http://").trim().to_string();
    let bep = tmp.path().join("build.bep");
    remote_build(&rig, &tmp.path().join("ws"), &server.target(), &bep);
    let id = bep_invocation_id(&bep);
    let artifact = wait_for_proof(&proofs, &id);

    // 1. Clean: every entry the proof attested is what the cache serves.
    let t = Instant::now();
    let (code, clean, err) = audit_json(&rig.remote_executor, &proofs, &public);
    let clean_secs = t.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{clean:#}\n{err}");
    let n = clean["entries_audited"].as_u64().unwrap();
    assert_eq!(n, 8, "the spoke's 8 executed actions: {clean:#}");
    assert_eq!(clean["counts"]["same"], 8, "{clean:#}");
    assert!(clean["suspects"].as_array().unwrap().is_empty());
    assert!(err.contains("8/8 AC entries read"), "{err}");
    println!("clean audit of {n} entries: {clean_secs:.2}s");

    // Behind the manifest's promoted classes: the proof promoted into
    // payments-api/package is audited and its class named; the example
    // manifest, which does not record it, leaves nothing to audit (exit 2).
    let manifest = manifest_with(tmp.path(), &artifact, &public);
    let audit_m = |m: &Path| {
        let (code, out, err) = proof(&[
            "audit",
            "--executor",
            &rig.remote_executor,
            "--proofs",
            proofs.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--manifest",
            m.to_str().unwrap(),
            "--format",
            "json",
        ]);
        (
            code,
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            err,
        )
    };
    let (code, promoted, err) = audit_m(&manifest);
    assert_eq!(code, 0, "{err}");
    assert_eq!(promoted["entries_audited"], 8);
    assert!(promoted["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["classes"] == serde_json::json!(["payments-api/package"])));
    let example =
        proof_e2e::repo_root().join("examples/platform/config/rbe-target-eligibility.json");
    let (code, none, err) = audit_m(&example);
    assert_eq!(code, 2, "{none:#}");
    assert_eq!(none["entries_audited"], 0);
    assert!(
        err.contains("behind the manifest's promoted classes"),
        "{err}"
    );

    let hello = entry_with_target(&clean, "//:hello").clone();
    let upper = entry_with_target(&clean, "//:upper").clone();
    let instance = hello["instance_name"].as_str().unwrap().to_string();
    let action = hello["action_digest"].as_str().unwrap().to_string();
    let other_blob = upper["attested"][0]["output_files"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // 2. The write-posture probe on the rig's writable instance: written
    // (a failure), and no real entry was touched.
    let (code, out, _) = proof(&[
        "probe-ac",
        "--executor",
        &rig.remote_executor,
        "--instance",
        &instance,
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let probe: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(probe["posture"], "writable");
    assert_eq!(probe["write_status"], "OK");
    assert_eq!(
        probe["readback"]["found"]["worker"],
        proof_acaudit::probe::CANARY_WORKER
    );
    let canary = probe["canary_digest"].as_str().unwrap();
    assert!(clean["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action_digest"] != canary));
    let (code, after_probe, err) = audit_json(&rig.remote_executor, &proofs, &public);
    assert_eq!(code, 0, "{after_probe:#}\n{err}");
    assert_eq!(after_probe["counts"]["same"], 8);

    // 3. The attack: //:hello's entry points at another blob of the CAS
    // (//:upper's output, the same size), worker name and all else kept.
    let client = AcClient::new(&rig.remote_executor, &[]).unwrap();
    let ask = AcAsk {
        instance_name: instance.clone(),
        digest: parse_digest(&action).unwrap(),
    };
    fn quiet(_: usize, _: usize) {}
    let original = match block_on(client.get_many(std::slice::from_ref(&ask), 1, &quiet))
        .unwrap()
        .remove(0)
    {
        proof_acaudit::Current::Found(r) => *r,
        other => panic!("{other:?}"),
    };
    let mut poisoned = original.clone();
    assert_eq!(poisoned.output_files.len(), 1);
    poisoned.output_files[0].digest = parse_digest(&other_blob);
    assert_ne!(poisoned, original);
    // The server's continuous audit has seen the proof, clean.
    wait_for_suspects(&http, &instance, 0);
    let (code, msg) = block_on(client.update(&instance, &ask.digest, &poisoned)).unwrap();
    assert_eq!(code, 0, "{msg}");
    // The continuous audit flags it within one interval (plus one run).
    let flagged = wait_for_suspects(&http, &instance, 1);
    println!("continuous audit flagged the rewrite after {flagged:?} (interval {INTERVAL:?})");
    assert!(flagged <= INTERVAL + Duration::from_secs(2), "{flagged:?}");
    let (status, page) = proof_e2e::http_get(&http, "/ac-audit", None);
    assert_eq!(status, 200);
    let table = &page[page
        .find("id=\"ac-suspects\"")
        .unwrap_or_else(|| panic!("{page}"))..];
    assert!(
        table.contains(&action) && table.contains("//:hello") && table.contains(">changed<"),
        "{page}"
    );
    assert_eq!(table.matches("<tr>").count(), 2, "one suspect row: {page}");
    let (_, metrics) = proof_e2e::http_get(&http, "/metrics", None);
    assert!(
        metrics.contains("proof_ac_entries_audited_total "),
        "{metrics}"
    );
    let last_ok: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("proof_ac_audit_last_success_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(last_ok > 0.0);

    let (code, bad, err) = audit_json(&rig.remote_executor, &proofs, &public);
    assert_eq!(code, 1, "{bad:#}\n{err}");
    assert_eq!(bad["counts"]["same"], 7, "{bad:#}");
    assert_eq!(bad["counts"]["changed"], 1, "{bad:#}");
    let suspects = bad["suspects"].as_array().unwrap();
    assert_eq!(suspects.len(), 1, "{bad:#}");
    let s = &suspects[0];
    assert_eq!(s["verdict"], "changed");
    assert_eq!(s["action_digest"], action.as_str());
    assert_eq!(s["instance_name"], instance.as_str());
    assert_eq!(s["targets"], serde_json::json!(["//:hello"]));
    assert_eq!(s["proofs"], serde_json::json!([format!("{id}.proof.tar")]));
    assert_eq!(
        s["writer"],
        original.execution_metadata.as_ref().unwrap().worker
    );
    assert_ne!(s["current_result_digest"], s["attested_result_digests"][0]);
    assert!(s["first_seen"].as_str().unwrap().ends_with('Z'));
    // The text names it too, with the attested and current digests.
    let (code, text, _) = proof(&[
        "audit",
        "--executor",
        &rig.remote_executor,
        "--proofs",
        proofs.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let line = text
        .lines()
        .find(|l| l.starts_with("CHANGED"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&action)
            && line.contains("target //:hello")
            && line.contains("class payments-api/package")
            && line.contains(&format!("proof {id}.proof.tar"))
            && line.contains(&format!("instance {instance:?}")),
        "{line}"
    );
    assert!(text.contains(&format!("-> current {other_blob}")), "{text}");
    assert_eq!(text.matches("CHANGED").count(), 1, "{text}");

    // 4. Restored from the hand-off alone (the attested result it carries,
    // written back): clean again.
    use base64::Engine as _;
    use prost::Message as _;
    let handed = base64::engine::general_purpose::STANDARD
        .decode(s["attested_results_base64"][0].as_str().unwrap())
        .unwrap();
    let restore = ActionResult::decode(handed.as_slice()).unwrap();
    assert_eq!(restore.output_files, original.output_files);
    let (code, msg) = block_on(client.update(&instance, &ask.digest, &restore)).unwrap();
    assert_eq!(code, 0, "{msg}");
    let (code, restored, err) = audit_json(&rig.remote_executor, &proofs, &public);
    assert_eq!(code, 0, "{restored:#}\n{err}");
    assert_eq!(restored["counts"]["same"], 8);
    let cleared = wait_for_suspects(&http, &instance, 0);
    assert!(cleared <= INTERVAL + Duration::from_secs(2), "{cleared:?}");
    let (_, page) = proof_e2e::http_get(&http, "/ac-audit", None);
    assert!(page.contains("id=\"ac-clean\""), "{page}");

    // 5. Unreachable executor: exit 2, and it says so.
    let closed = format!("grpc://127.0.0.1:{}", proof_e2e::pg::free_port());
    let (code, out, err) = proof(&[
        "audit",
        "--executor",
        &closed,
        "--proofs",
        proofs.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("the executor at {closed} cannot be reached"))
            && err.contains("check --executor"),
        "{err}"
    );

    // 6. A hostile executor (the alias the proof names): oversized answers
    // are refused unread, absurd ones judged, silence times out.
    let mode = Arc::new(AtomicU8::new(0));
    start_hostile(hostile, mode.clone());
    let t = Instant::now();
    let (code, huge, err) = audit_json(&hostile_ep, &proofs, &public);
    assert_eq!(code, 2, "{huge:#}\n{err}");
    assert_eq!(huge["counts"]["unreachable"], 8, "{huge:#}");
    let detail = huge["entries"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("OutOfRange"), "{detail}");
    assert!(t.elapsed() < Duration::from_secs(60));
    mode.store(1, Ordering::SeqCst);
    let t = Instant::now();
    let (code, absurd, err) = audit_json(&hostile_ep, &proofs, &public);
    assert_eq!(code, 1, "{err}");
    assert_eq!(absurd["counts"]["unattested-writer"], 8);
    assert_eq!(absurd["suspects"][0]["writer"], "evil\u{202e}bot");
    println!(
        "absurd answers audited in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    assert!(t.elapsed() < Duration::from_secs(60));
    // Bytes that are not an ActionResult: unusable, named, exit 2.
    start_malformed(malformed);
    let (code, bad_bytes, err) = audit_json(&malformed_ep, &proofs, &public);
    assert_eq!(code, 2, "{bad_bytes:#}\n{err}");
    assert_eq!(bad_bytes["counts"]["unreachable"], 8, "{bad_bytes:#}");
    let detail = bad_bytes["entries"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("decode"), "{detail}");
    mode.store(2, Ordering::SeqCst);
    let mut silent = AcClient::new(&hostile_ep, &[]).unwrap();
    silent.call_timeout = Duration::from_secs(1);
    let t = Instant::now();
    let answers = block_on(silent.get_many(&[ask.clone(), ask], 2, &quiet)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    for a in answers {
        let proof_acaudit::Current::Unusable(why) = a else {
            panic!("{a:?}")
        };
        assert!(
            why.contains("DeadlineExceeded") || why.contains("Cancelled"),
            "{why}"
        );
    }
    drop(server);
}

/// `proof probe-ac --executor EP --instance NAME --key KEY --out OUT --json`.
fn probe_ac(ep: &str, instance: &str, key: &Path, out: &Path) -> (i32, serde_json::Value) {
    let (code, text, err) = proof(&[
        "probe-ac",
        "--executor",
        ep,
        "--instance",
        instance,
        "--header",
        "authorization: Bearer lane-token-not-recorded",
        "--key",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(!text.contains("lane-token-not-recorded") && !err.contains("lane-token"));
    (
        code,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

#[test]
fn probe_ac_is_denied_on_the_read_only_lane_written_on_the_writable_one_and_reported() {
    let _rig = rig();
    // The rig's own template, with its "readonly" instance, on a BuildGrid
    // of this test's own (the shared rig is not restarted).
    let bg = proof_e2e::buildgrid::start("acprobe");
    let ep = bg.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());

    let ro_file = tmp.path().join("readonly.probe.json");
    let (code, ro) = probe_ac(&ep, "readonly", &key, &ro_file);
    assert_eq!(code, 0, "{ro:#}");
    assert_eq!(ro["posture"], "read-only");
    assert_eq!(ro["passed"], true);
    assert_eq!(ro["write_status"], "UNIMPLEMENTED");
    assert_eq!(ro["readback"], "not-found");
    assert_eq!(ro["header_names"], serde_json::json!(["authorization"]));

    let rw_file = tmp.path().join("writable.probe.json");
    let (code, rw) = probe_ac(&ep, "", &key, &rw_file);
    assert_eq!(code, 1, "{rw:#}");
    assert_eq!(rw["posture"], "writable");
    assert_eq!(rw["passed"], false);
    assert_eq!(rw["write_status"], "OK");
    assert_eq!(
        rw["readback"]["found"]["worker"],
        proof_acaudit::probe::CANARY_WORKER
    );
    // The read-only lane reads the very same cache: the canary written on
    // "" is served there too (so denial is not an empty, separate cache).
    let canary = rw["canary_digest"].as_str().unwrap();
    fn quiet(_: usize, _: usize) {}
    let through = block_on(AcClient::new(&ep, &[]).unwrap().get_many(
        &[AcAsk {
            instance_name: "readonly".into(),
            digest: parse_digest(canary).unwrap(),
        }],
        1,
        &quiet,
    ))
    .unwrap();
    assert!(
        matches!(&through[0], proof_acaudit::Current::Found(r) if r.output_files.is_empty()),
        "{through:?}"
    );
    // And its preimage can never be a build's Action.
    assert_ne!(ro["canary_digest"], rw["canary_digest"]);

    // The E2 section of `proof report`: the postures as probed, and the
    // last audit's figures.
    let audit_file = tmp.path().join("audit.json");
    let empty = tmp.path().join("no-proofs");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, audit_out, _) = proof(&[
        "audit",
        "--executor",
        &ep,
        "--proofs",
        empty.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 2, "nothing to audit is not clean");
    std::fs::write(&audit_file, &audit_out).unwrap();
    let manifest =
        proof_e2e::repo_root().join("examples/platform/config/rbe-target-eligibility.json");
    let report = |probes: &[&Path]| {
        let mut args = vec![
            "report".to_string(),
            "--manifest".into(),
            manifest.display().to_string(),
            "--key".into(),
            public.display().to_string(),
            "--ac-audit".into(),
            audit_file.display().to_string(),
        ];
        for p in probes {
            args.extend(["--ac-probe".into(), p.display().to_string()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        proof(&refs)
    };
    let (code, md, err) = report(&[&ro_file, &rw_file]);
    assert_eq!(code, 0, "{err}");
    assert!(md.contains("## E2: action-cache authority"), "{md}");
    assert!(md.contains("**Does not hold yet.**"), "{md}");
    assert!(
        md.contains(&format!("| `readonly` | `{ep}` |"))
            && md.contains("| UNIMPLEMENTED | not found | read-only (pass) |"),
        "{md}"
    );
    assert!(md.contains("| OK | canary served"), "{md}");
    assert!(md.contains("writable (FAIL)"), "{md}");
    assert!(
        md.contains(&format!(
            "Last AC audit of `{ep}`: 0 AC entries behind the executor-attested proofs of"
        )),
        "{md}"
    );

    // A probe result edited to claim read-only does not verify.
    let text = std::fs::read_to_string(&rw_file).unwrap();
    let mut env: serde_json::Value = serde_json::from_str(&text).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    let forged = payload
        .replace("\"posture\":\"writable\"", "\"posture\":\"read-only\"")
        .replace("\"passed\":false", "\"passed\":true");
    assert_ne!(forged, payload);
    env["payload"] = b64.encode(forged).into();
    let forged_file = tmp.path().join("forged.probe.json");
    std::fs::write(&forged_file, serde_json::to_string(&env).unwrap() + "\n").unwrap();
    let (code, _, err) = report(&[&forged_file]);
    assert_eq!(code, 2);
    assert!(err.contains("signature"), "{err}");
    // Nor does one signed by another key.
    let other = tempfile::tempdir().unwrap();
    let (other_key, _) = keypair(other.path());
    let stranger = tmp.path().join("stranger.probe.json");
    let (code, _) = probe_ac(&ep, "readonly", &other_key, &stranger);
    assert_eq!(code, 0);
    let (code, _, err) = report(&[&stranger]);
    assert_eq!(code, 2);
    assert!(err.contains("signature"), "{err}");
    drop(bg);
}
