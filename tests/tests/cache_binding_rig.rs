//! Remote cache hits bound to witnessed executions (issue 27, item 2), on
//! real Bazel (Debian's 4.2.3) against the loopback rig and `proof serve
//! --executor`.
//!
//! One server signs every build, so its index of attested results
//! (`PROOFS/.attested`) holds what the executor executed for the earlier
//! ones. Each build runs in a fresh copy of the spoke (its own output
//! base), so Bazel asks the remote cache for every action:
//! 1. a first remote `test //...`: every action executed, every target
//!    bound as executed;
//! 2. `greeter.c` changed: the compile, link and `//:greeting` re-execute
//!    (bound), the rest is served from the cache of build 1 and bound as
//!    cached-attested; verify passes;
//! 3. the same sources again: everything served from the cache, every
//!    target cached-attested, and `remote_executions` still fails (the
//!    outputs are attested; this build did not run remotely);
//! 4. a client rewrites `//:who_ran_me`'s ActionCache entry
//!    (UpdateActionResult, another output digest, the worker name kept),
//!    then `greeter.c` changes again: `//:who_ran_me` is served the
//!    rewritten entry and is unbound, verify exits 1; the class holding it
//!    (`//...`) does not promote, a class of bound targets does;
//! 5. the residual the docs state: `//:greeting`'s entry pointed at build
//!    1's (older, but really executed) `greeting.txt` still binds.
//!
//! And a target tagged `no-remote` in an otherwise remote build is unbound;
//! the classes without it still promote, and the PR check agrees.
//!
//! Needs the rig: `bash tests/run-all.sh`, or `. /work/rig-env.sh`-style
//! exports (see tests/run-all.sh).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use proof_e2e::{
    action_nonce, bep_invocation_id, keypair, repo_root, rig, run_proof, verify_check, verify_json,
    wait_for_proof, Rig, Server,
};
use proof_proto::ledger::{ledger_record, LedgerRecord};
use proof_proto::longrunning::operation;
use proof_proto::reapi::{
    action_cache_client::ActionCacheClient, batch_update_blobs_request, ActionResult,
    BatchUpdateBlobsRequest, BatchUpdateBlobsResponse, Digest, ExecuteOperationMetadata,
    ExecuteResponse, GetActionResultRequest, UpdateActionResultRequest,
};
use prost::Message;
use sha2::Digest as _;

/// Targets whose outputs the change of `greeter.c` re-executes.
const CHANGED: [&str; 2] = ["//:greeter", "//:greeting"];
/// Targets served from the cache after that change.
const CACHED: [&str; 4] = ["//:hello", "//:upper", "//:who_ran_me", "//:hello_test"];

struct Build {
    id: String,
    artifact: PathBuf,
    code: i32,
    checks: serde_json::Value,
    evidence: serde_json::Value,
}

/// The repo the spoke's builds name (a class owner in the example manifest).
const REPO: &str = "acme/payments-api";

/// A `proof serve --executor RIG` with its proofs directory.
fn serve(rig: &Rig, tmp: &Path, key: &Path) -> (Server, PathBuf) {
    let proofs = tmp.join("proofs");
    let server = Server::start(
        "127.0.0.1:0",
        &tmp.join("store"),
        &[
            "--key",
            key.to_str().unwrap(),
            "--proofs",
            proofs.to_str().unwrap(),
            "--executor",
            &rig.remote_executor,
        ],
    );
    (server, proofs)
}

/// A fresh copy of the spoke with `greeter.c` printing `greeting` (None:
/// as shipped), built and tested remotely through `server`, with `extra`
/// Bazel flags. The build named "no-remote" adds `//:local_only`, tagged
/// `no-remote`.
#[allow(clippy::too_many_arguments)]
fn build(
    rig: &Rig,
    tmp: &Path,
    name: &str,
    server: &Server,
    proofs: &Path,
    public: &Path,
    nonce: &str,
    greeting: Option<&str>,
    extra: &[&str],
) -> Build {
    let ws = tmp.join(name);
    rig.spoke(&ws);
    if let Some(g) = greeting {
        let c = ws.join("greeter.c");
        let src = std::fs::read_to_string(&c).unwrap();
        let edited = src.replace("greetings from a remotely built binary", g);
        assert_ne!(src, edited, "greeter.c changed shape");
        std::fs::write(&c, edited).unwrap();
    }
    if name == "no-remote" {
        let build = ws.join("BUILD.bazel");
        let mut text = std::fs::read_to_string(&build).unwrap();
        text.push_str(
            "\ngenrule(\n    name = \"local_only\",\n    outs = [\"local_only.txt\"],\n    cmd = \"echo local > $@\",\n    tags = [\"no-remote\"],\n)\n",
        );
        std::fs::write(&build, text).unwrap();
    }
    let bep = tmp.join(format!("{name}.bep"));
    let bes = format!("--bes_backend={}", server.target());
    let bep_flag = format!("--build_event_binary_file={}", bep.display());
    let repo = format!("--build_metadata=REPO={REPO}");
    let mut args = vec![
        "test",
        "--config=proof",
        "//...",
        &bes,
        nonce,
        &bep_flag,
        &repo,
    ];
    args.extend(extra);
    let out = rig.bazel(&ws, &args);
    rig.shutdown(&ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    let id = bep_invocation_id(&bep);
    let artifact = wait_for_proof(proofs, &id);
    let (code, checks, report) = verify_json(public, &artifact, &[]);
    let (ok, detail) = verify_check(&checks, "outputs_bound");
    println!("{name}: exit {code}; outputs_bound ok={ok}: {detail}");
    Build {
        id,
        artifact,
        code,
        checks,
        evidence: report["evidence"].clone(),
    }
}

fn status<'a>(b: &'a Build, label: &str) -> &'a serde_json::Value {
    let t = &b.evidence["output_binding"]["targets"][label];
    assert!(
        t.is_object(),
        "no binding for {label}: {}",
        b.evidence["output_binding"]
    );
    &t["status"]
}

/// The records of a proof's `executor.bin`.
fn ledger(artifact: &Path) -> Vec<LedgerRecord> {
    let scanned = proof_artifact::tar::scan(std::fs::File::open(artifact).unwrap()).unwrap();
    let m = scanned
        .member(proof_artifact::tar::EXECUTOR)
        .expect("a server-signed proof carries executor.bin");
    let mut f = std::fs::File::open(artifact).unwrap();
    f.seek(SeekFrom::Start(m.offset)).unwrap();
    let mut bytes = vec![0; m.size as usize];
    f.read_exact(&mut bytes).unwrap();
    proof_stream::delimited::split_delimited(&bytes, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| LedgerRecord::decode(r).unwrap())
        .collect()
}

/// The action digest and output digest of the executed operation in
/// `artifact`'s ledger whose output path ends with `suffix`.
fn executed_action(artifact: &Path, suffix: &str) -> (Digest, Digest) {
    for rec in ledger(artifact) {
        let Some(ledger_record::Record::Page(p)) = rec.record else {
            continue;
        };
        for op in p.response.iter().flat_map(|r| &r.operations) {
            let Some(operation::Result::Response(any)) = &op.result else {
                continue;
            };
            let resp = ExecuteResponse::decode(any.value.as_slice()).unwrap();
            let Some(out) = resp
                .result
                .iter()
                .flat_map(|r| &r.output_files)
                .find(|f| f.path.ends_with(suffix))
            else {
                continue;
            };
            let md = ExecuteOperationMetadata::decode(
                op.metadata
                    .as_ref()
                    .expect("operation metadata")
                    .value
                    .as_slice(),
            )
            .unwrap();
            return (md.action_digest.unwrap(), out.digest.clone().unwrap());
        }
    }
    panic!("no executed output *{suffix} in {}", artifact.display());
}

/// What a client with write access to the ActionCache does: uploads `data`
/// and points the cached result of `action` at it, keeping every other
/// field (the worker name included). Returns the new digest and the worker.
fn rewrite_cache_entry(endpoint: &str, action: &Digest, data: &[u8]) -> (Digest, String) {
    let uri = endpoint.replace("grpc://", "http://");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(uri)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut ac = ActionCacheClient::new(channel.clone());
        let mut grpc = tonic::client::Grpc::new(channel);
        let forged = Digest {
            hash: hex::encode(sha2::Sha256::digest(data)),
            size_bytes: data.len() as i64,
        };
        grpc.ready().await.unwrap();
        let up: BatchUpdateBlobsResponse = grpc
            .unary(
                tonic::Request::new(BatchUpdateBlobsRequest {
                    instance_name: String::new(),
                    requests: vec![batch_update_blobs_request::Request {
                        digest: Some(forged.clone()),
                        data: data.to_vec(),
                    }],
                }),
                "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"
                    .parse()
                    .unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap()
            .into_inner();
        assert!(
            up.responses
                .iter()
                .all(|r| r.status.as_ref().is_none_or(|s| s.code == 0)),
            "{up:?}"
        );
        let get = || GetActionResultRequest {
            instance_name: String::new(),
            action_digest: Some(action.clone()),
            ..Default::default()
        };
        let mut result = ac.get_action_result(get()).await.unwrap().into_inner();
        assert_eq!(result.output_files.len(), 1, "{result:?}");
        result.output_files[0].digest = Some(forged.clone());
        let worker = result
            .execution_metadata
            .as_ref()
            .map(|m| m.worker.clone())
            .unwrap_or_default();
        assert!(!worker.is_empty(), "the entry names no worker: {result:?}");
        grpc.ready().await.unwrap();
        let _: tonic::Response<ActionResult> = grpc
            .unary(
                tonic::Request::new(UpdateActionResultRequest {
                    instance_name: String::new(),
                    action_digest: Some(action.clone()),
                    action_result: Some(result),
                    ..Default::default()
                }),
                "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult"
                    .parse()
                    .unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap();
        let back = ac.get_action_result(get()).await.unwrap().into_inner();
        assert_eq!(back.output_files[0].digest.as_ref(), Some(&forged));
        assert_eq!(back.execution_metadata.unwrap().worker, worker);
        (forged, worker)
    })
}

/// A copy of the example manifest (it allows unauthenticated proofs) in `dir`.
fn manifest(dir: &Path) -> PathBuf {
    let path = dir.join("manifest.json");
    std::fs::copy(
        repo_root().join("examples/platform/config/rbe-target-eligibility.json"),
        &path,
    )
    .unwrap();
    path
}

/// `proof promote ARTIFACT --class CLASS`: (exit code, output).
fn promote(artifact: &Path, manifest: &Path, class: &str, public: &Path) -> (i32, String) {
    run_proof(&[
        "promote",
        artifact.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--class",
        class,
        "--key",
        public.to_str().unwrap(),
    ])
}

/// The PR check's verdict on `class` (`proof verify --manifest`).
fn pr_check(manifest: &Path, proofs: &Path, public: &Path, class: &str) -> serde_json::Value {
    let (_, out) = run_proof(&[
        "verify",
        "--manifest",
        manifest.to_str().unwrap(),
        "--proofs",
        proofs.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    v["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == class)
        .unwrap()
        .clone()
}

/// Only `outputs_bound` fails among the checks.
fn only_outputs_bound_fails(b: &Build) {
    let failed: Vec<&String> = b
        .checks
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, c)| c["ok"] == false)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(failed, ["outputs_bound"], "{}", b.checks);
}

#[test]
fn cache_hits_bind_only_to_executions_the_server_witnessed() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let (server, proofs) = serve(&rig, tmp.path(), &key);
    let nonce = action_nonce("CACHE");
    let b = |name: &str, greeting: Option<&str>| {
        build(
            &rig,
            tmp.path(),
            name,
            &server,
            &proofs,
            &public,
            &nonce,
            greeting,
            &[],
        )
    };

    // 1. Every action executed: every target bound as executed.
    let first = b("first", None);
    assert_eq!(first.code, 0, "{}", first.checks);
    for label in CHANGED.iter().chain(&CACHED) {
        assert_eq!(status(&first, label), "bound", "{label}");
    }

    // 2. One source changed: re-executed targets bound, the rest served
    // from build 1's cache and bound to build 1's executions.
    let second = b("second", Some("greetings, changed once"));
    assert_eq!(second.code, 0, "{}", second.checks);
    for label in CHANGED {
        assert_eq!(status(&second, label), "bound", "{label}");
    }
    for label in CACHED {
        assert_eq!(status(&second, label), "cached_attested", "{label}");
    }
    let ob = &second.evidence["output_binding"];
    assert_eq!(ob["targets_unbound"], 0, "{ob}");
    assert!(ob["attested_results"].as_u64().unwrap() >= 4, "{ob}");
    let (_, detail) = verify_check(&second.checks, "outputs_bound");
    assert!(
        detail.contains("served from the cache, each produced by an earlier execution the server witnessed (cached-attested)"),
        "{detail}"
    );
    // The raw facts are in the artifact: the earlier operations of build 1.
    let attested: Vec<String> = ledger(&second.artifact)
        .into_iter()
        .filter_map(|r| match r.record {
            Some(ledger_record::Record::Attested(a)) => Some(a.invocation_id),
            _ => None,
        })
        .collect();
    assert!(!attested.is_empty());
    assert!(attested.iter().all(|i| *i == first.id), "{attested:?}");

    // 3. The same sources again: served entirely from the cache. The
    // outputs are attested, but this build ran nothing remotely.
    let cached = b("cached", Some("greetings, changed once"));
    assert_eq!(cached.code, 1, "{}", cached.checks);
    for label in CHANGED.iter().chain(&CACHED) {
        assert_eq!(status(&cached, label), "cached_attested", "{label}");
    }
    assert!(verify_check(&cached.checks, "outputs_bound").0);
    let (ok, detail) = verify_check(&cached.checks, "remote_executions");
    assert!(
        !ok,
        "a build served entirely from the cache passed: {detail}"
    );

    // 4. A client rewrites who_ran_me's cache entry (another digest, the
    // worker's name kept); the next build is served that entry.
    let (action, original) = executed_action(&first.artifact, "who_ran_me.txt");
    let (forged, worker) = rewrite_cache_entry(
        &rig.remote_executor,
        &action,
        b"written by a client, never by an execution\n",
    );
    assert_ne!(forged, original);
    println!(
        "rewrote {}/{} (worker {worker:?})",
        action.hash, action.size_bytes
    );
    let rewritten = b("rewritten", Some("greetings, changed twice"));
    assert_eq!(rewritten.code, 1, "{}", rewritten.checks);
    assert_eq!(status(&rewritten, "//:who_ran_me"), "unbound");
    let t = &rewritten.evidence["output_binding"]["targets"]["//:who_ran_me"];
    assert_eq!(
        t["unbound"][0]["digest"],
        format!("{}/{}", forged.hash, forged.size_bytes),
        "{t}"
    );
    assert!(
        t["unbound"][0]["why"]
            .as_str()
            .unwrap()
            .contains("no earlier execution the server witnessed produced it at this path"),
        "{t}"
    );
    for label in CHANGED {
        assert_eq!(status(&rewritten, label), "bound", "{label}");
    }
    for label in ["//:hello", "//:upper", "//:hello_test"] {
        assert_eq!(status(&rewritten, label), "cached_attested", "{label}");
    }
    let (ok, detail) = verify_check(&rewritten.checks, "outputs_bound");
    assert!(!ok);
    assert!(detail.contains("//:who_ran_me"), "{detail}");
    // Judged per class: //... holds who_ran_me and does not promote;
    // //:greeting (executed) and //:hello_test (cached-attested) do (two
    // cache-first classes with no proof recorded yet, so the PR check
    // judges only this one).
    only_outputs_bound_fails(&rewritten);
    let m = manifest(tmp.path());
    let before = std::fs::read_to_string(&m).unwrap();
    let (code, text) = promote(&rewritten.artifact, &m, "payments-api/build", &public);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("outputs_bound") && text.contains("//:who_ran_me"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&m).unwrap(), before);
    for class in ["payments-api/package", "payments-api/integration"] {
        let (code, text) = promote(&rewritten.artifact, &m, class, &public);
        assert_eq!(code, 0, "{class}: {text}");
        let c = pr_check(&m, &proofs, &public, class);
        assert_eq!(c["ok"], true, "{c}");
    }

    // 5. The documented residual (docs/posture.md): an entry rewritten to
    // an OLDER output of the same path that an attested execution really
    // produced still binds. //:greeting's entry for build 2's sources is
    // pointed at build 1's greeting.txt; a build of build 2's sources is
    // served those stale bytes and reports them cached-attested.
    let (action, _) = executed_action(&second.artifact, "greeting.txt");
    let (_, v1) = executed_action(&first.artifact, "greeting.txt");
    let (stale, _) = rewrite_cache_entry(
        &rig.remote_executor,
        &action,
        b"greetings from a remotely built binary\n",
    );
    assert_eq!(stale, v1, "build 1's greeting.txt");
    let residual = b("stale", Some("greetings, changed once"));
    assert_eq!(status(&residual, "//:greeting"), "cached_attested");
    let t = &residual.evidence["output_binding"]["targets"]["//:greeting"];
    assert_eq!(t["files_cached_attested"], 1, "{t}");
    drop(server);
}

#[test]
fn a_no_remote_target_is_unbound_and_the_other_classes_still_promote() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let (server, proofs) = serve(&rig, tmp.path(), &key);
    // Remote first, local for what may not run remotely: still forced (the
    // list includes remote, and there is no local fallback).
    let b = build(
        &rig,
        tmp.path(),
        "no-remote",
        &server,
        &proofs,
        &public,
        &action_nonce("NOREMOTE"),
        None,
        &["--spawn_strategy=remote,local"],
    );
    assert_eq!(b.code, 1, "{}", b.checks);
    assert_eq!(status(&b, "//:local_only"), "unbound");
    for label in CHANGED.iter().chain(&CACHED) {
        assert_eq!(status(&b, label), "bound", "{label}");
    }
    only_outputs_bound_fails(&b);
    let (_, detail) = verify_check(&b.checks, "outputs_bound");
    assert!(detail.contains("//:local_only"), "{detail}");

    let m = manifest(tmp.path());
    let (code, text) = promote(&b.artifact, &m, "payments-api/build", &public);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("outputs_bound") && text.contains("//:local_only"),
        "{text}"
    );
    // payments-api/package (//:greeting) and payments-api/integration
    // (//:hello_test) are cache-first with no proof yet: promoted to
    // executor-backed on this proof.
    for class in ["payments-api/package", "payments-api/integration"] {
        let (code, text) = promote(&b.artifact, &m, class, &public);
        assert_eq!(code, 0, "{class}: {text}");
        let c = pr_check(&m, &proofs, &public, class);
        assert_eq!(c["ok"], true, "{c}");
        assert_eq!(c["mode"], "executor-backed", "{c}");
    }
    drop(server);
}

/// A Starlark rule whose one action writes a directory (3 files, one
/// nested); `nonce` makes the action new, so it is executed.
fn tree_rule(nonce: &str) -> String {
    format!(
        r#"def _impl(ctx):
    d = ctx.actions.declare_directory(ctx.label.name + "_out")
    ctx.actions.run_shell(
        outputs = [d],
        command = "mkdir -p $1/sub && echo {nonce} > $1/a.txt && echo b > $1/sub/b.txt && echo c > $1/sub/c.txt",
        arguments = [d.path],
    )
    return [DefaultInfo(files = depset([d]))]

tree_rule = rule(implementation = _impl)
"#
    )
}

#[test]
fn files_inside_a_directory_output_bind_through_the_tree_the_executor_stored() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let (server, proofs) = serve(&rig, tmp.path(), &key);
    let ws = tmp.path().join("tree");
    rig.spoke(&ws);
    let nonce = action_nonce("TREE");
    std::fs::write(
        ws.join("tree.bzl"),
        tree_rule(&nonce.replace(['=', '-'], "_")),
    )
    .unwrap();
    let build = ws.join("BUILD.bazel");
    let text = std::fs::read_to_string(&build).unwrap();
    std::fs::write(
        &build,
        format!("load(\":tree.bzl\", \"tree_rule\")\n\n{text}\ntree_rule(name = \"tree\")\n"),
    )
    .unwrap();
    let bep = tmp.path().join("tree.bep");
    let out = rig.bazel(
        &ws,
        &[
            "build",
            "--config=proof",
            "//:tree",
            &format!("--bes_backend={}", server.target()),
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    rig.shutdown(&ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    let id = bep_invocation_id(&bep);
    let artifact = wait_for_proof(&proofs, &id);
    let (code, checks, report) = verify_json(&public, &artifact, &[]);
    let (ok, detail) = verify_check(&checks, "outputs_bound");
    println!("tree: exit {code}; outputs_bound ok={ok}: {detail}");
    let ob = &report["evidence"]["output_binding"];
    let t = &ob["targets"]["//:tree"];
    assert_eq!(t["status"], "bound", "{ob}");
    assert_eq!(t["files_bound"], 3, "{t}");
    assert_eq!(ob["output_directories_read"], 1, "{ob}");
    assert_eq!(ob["output_directories_unread"], 0, "{ob}");
    assert!(ok, "{detail}");
    assert_eq!(code, 0, "{checks}");
    // The Tree blob is in the artifact, so verify read it offline.
    let trees = ledger(&artifact)
        .into_iter()
        .filter(|r| {
            matches!(&r.record, Some(ledger_record::Record::Blob(b))
                if proof_proto::reapi::Tree::decode(b.data.as_slice())
                    .is_ok_and(|t| t.root.is_some_and(|r| r.files.len() == 1 && r.directories.len() == 1)))
        })
        .count();
    assert_eq!(trees, 1);
    drop(server);
}

#[test]
fn proof_record_with_the_executor_gives_an_offline_proof_the_same_ledger_and_checks() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let ws = tmp.path().join("offline");
    rig.spoke(&ws);
    let bep = tmp.path().join("offline.bep");
    // No BES: only the build's own files, recorded offline afterwards.
    let out = rig.bazel(
        &ws,
        &[
            "test",
            "--config=proof",
            "//...",
            "--bes_backend=",
            &action_nonce("RECORD"),
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    rig.shutdown(&ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    let id = bep_invocation_id(&bep);
    let dir = tmp.path().join("proofs");
    let (code, text) = run_proof(&[
        "record",
        bep.to_str().unwrap(),
        "--executor",
        &rig.remote_executor,
        "--key",
        key.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let artifact = dir.join(format!("{id}.proof.tar"));
    let (code, checks, report) = verify_json(&public, &artifact, &[]);
    let (ok, detail) = verify_check(&checks, "outputs_bound");
    println!("record --executor: exit {code}; outputs_bound ok={ok}: {detail}");
    assert!(ok, "{detail}");
    assert!(verify_check(&checks, "executor_attested").0, "{checks}");
    assert_eq!(code, 0, "{checks}");
    let ev = &report["evidence"];
    assert_eq!(ev["attestation"]["executed"], 8, "{}", ev["attestation"]);
    assert_eq!(ev["origin"]["recorded_by"], "proof record");
    let ob = &ev["output_binding"];
    assert_eq!(ob["targets_bound"], 6, "{ob}");
    assert!(
        ob["window"]["times"].as_str().unwrap().starts_with(
            "BuildStarted.start_time to BuildFinished.finish_time as the client stamped them"
        ),
        "{ob}"
    );

    // Without --executor the same files give no ledger: outputs_bound is
    // not required and executor_attested is not asked.
    let plain = tmp.path().join("plain");
    let (code, text) = run_proof(&[
        "record",
        bep.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let (_, checks, _) = verify_json(&public, &plain.join(format!("{id}.proof.tar")), &[]);
    assert!(checks.get("outputs_bound").is_none(), "{checks}");
}
