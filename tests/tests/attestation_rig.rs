//! Executor attestation on real Bazel (Debian's 4.2.3) against the loopback
//! rig: `proof serve --executor` asks BuildGrid what it ran for each
//! invocation. A real remote build is attested (8 executed operations, the
//! rig's bot, the image from the Action/Command platform); the forged stream
//! of issue #10 (a local-only run edited to claim 8 remote executions, a
//! remote executor, a pinned image and another team's repo) is not, and
//! cannot be promoted; the same forged BEP with the run's real execution log
//! fails the cross-check offline; an unreachable executor fails closed; an
//! unauthenticated proof and another tenant's proof cannot promote a class.
//! Needs the rig: `bash tests/run-all.sh`, or start it and
//! `set -a; . /tmp/rbe-proof-rig/run/rig.env; set +a`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use proof_e2e::forge::{claim_remote, IMAGE};
use proof_e2e::{
    action_nonce, bep_invocation_id, delimited_records, fixture, keypair, repo_root, rig,
    run_proof, verify_check, verify_json, wait_for_proof, Rig, Server,
};
use proof_proto::bep::{build_event, BuildEvent};
use prost::Message;

/// `proof verify --json` with `flags`: (exit code, checks by name, evidence).
fn verify(
    public: &Path,
    artifact: &Path,
    flags: &[&str],
) -> (i32, serde_json::Value, serde_json::Value) {
    let (code, checks, report) = verify_json(public, artifact, flags);
    (code, checks, report["evidence"].clone())
}

/// A real remote build of a fresh copy of the spoke, every action executed
/// (unique input, --noremote_accept_cached), streamed to `bes` ("" for
/// none), BEP also written to `bep`, claiming repo `repo`.
fn remote_build(rig: &Rig, ws: &Path, bes: &str, bep: &Path, repo: &str) {
    rig.spoke(ws);
    let out = rig.bazel(
        ws,
        &[
            "build",
            "--config=proof",
            "//...",
            &format!("--bes_backend={bes}"),
            "--noremote_accept_cached",
            &action_nonce("ATTEST"),
            &format!("--build_metadata=REPO={repo}"),
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    rig.shutdown(ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    assert!(out.output.contains("8 remote"), "{}", out.output);
}

/// The issue #10 forgery of the local-only fixture: the process summary
/// says "8 remote", the canonical command line gains --remote_executor, a
/// pinned container-image and --spawn_strategy=remote, and the REPO build
/// metadata names `repo`.
fn forged_local_only(repo: &str, executor: &str) -> Vec<Vec<u8>> {
    let mut claimed = Vec::new();
    let mut repos = 0;
    let out: Vec<Vec<u8>> = delimited_records(&fixture("local-only", "bep.bin"))
        .into_iter()
        .map(|bytes| {
            let mut ev = BuildEvent::decode(bytes.as_slice()).unwrap();
            claimed.extend(claim_remote(&mut ev, executor));
            if let Some(build_event::Payload::BuildMetadata(m)) = ev.payload.as_mut() {
                m.metadata.insert("REPO".into(), repo.into());
                repos += 1;
            }
            ev.encode_to_vec()
        })
        .collect();
    assert_eq!(
        (claimed.len(), repos),
        (3, 1),
        "the fixture changed shape: {claimed:?}"
    );
    out
}

fn write_delimited(path: &Path, events: &[Vec<u8>]) {
    let mut buf = Vec::new();
    for e in events {
        proof_stream::delimited::encode_varint(e.len() as u64, &mut buf);
        buf.extend_from_slice(e);
    }
    std::fs::write(path, buf).unwrap();
}

/// `proof replay FILE --to TARGET [--header authorization=Bearer TOKEN]`.
fn replay(file: &Path, target: &str, token: Option<&str>) {
    let mut args = vec![
        "replay".to_string(),
        file.display().to_string(),
        "--to".into(),
        target.into(),
        "--max-retries".into(),
        "0".into(),
    ];
    if let Some(t) = token {
        args.extend(["--header".into(), format!("authorization=Bearer {t}")]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text) = run_proof(&refs);
    assert_eq!(code, 0, "{text}");
}

/// A copy of the example manifest in `dir`, with
/// allow_unauthenticated_proofs set to `allow`.
fn manifest(dir: &Path, allow: bool) -> PathBuf {
    let text = std::fs::read_to_string(
        repo_root().join("examples/platform/config/rbe-target-eligibility.json"),
    )
    .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("allow_unauthenticated_proofs");
    let mut out = serde_json::Map::new();
    for (k, val) in o.iter() {
        out.insert(k.clone(), val.clone());
        if k == "schema_version" && allow {
            out.insert("allow_unauthenticated_proofs".into(), true.into());
        }
    }
    let path = dir.join(format!("manifest-{allow}.json"));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::Value::Object(out)).unwrap() + "\n",
    )
    .unwrap();
    path
}

/// `proof promote`: (exit code, output).
fn promote(
    artifact: &Path,
    manifest: &Path,
    class: &str,
    public: &Path,
    extra: &[&str],
) -> (i32, String) {
    let mut args = vec![
        "promote",
        artifact.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--class",
        class,
        "--key",
        public.to_str().unwrap(),
    ];
    args.extend(extra);
    run_proof(&args)
}

#[test]
fn a_real_remote_build_is_attested_and_the_forged_stream_is_not() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let proofs = tmp.path().join("proofs");
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
        ],
    );

    // 1. A real remote build through --config=proof.
    let bep = tmp.path().join("real.bep");
    remote_build(
        &rig,
        &tmp.path().join("ws"),
        &server.target(),
        &bep,
        "acme/payments-api",
    );
    let id = bep_invocation_id(&bep);
    let real = wait_for_proof(&proofs, &id);
    let (code, checks, ev) = verify(&public, &real, &[]);
    let (ok, detail) = verify_check(&checks, "executor_attested");
    assert!(ok, "{detail}");
    assert_eq!(code, 0, "{checks}");
    let att = &ev["attestation"];
    assert_eq!(att["invocation_id"], id.as_str());
    assert_eq!(att["executed"], 8, "{att}");
    // The suite's rig answers ListOperations at most RIG_MAX_PAGE_SIZE a page
    // (tests/run-all.sh: 5): a real build's proof passes over several pages
    // (issue 25).
    if let Some(max) = std::env::var("RIG_MAX_LIST_OPERATIONS_PAGE_SIZE")
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
    {
        let pages = ledger_pages(&real);
        assert_eq!(
            pages,
            8_u64.div_ceil(max).max(1),
            "8 operations at {max} a page"
        );
    }
    assert_eq!(att["cached"], 0, "{att}");
    let workers: Vec<&str> = att["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        workers.len() == 1 && workers[0].starts_with("rig-bot"),
        "{workers:?}"
    );
    assert_eq!(att["images"][0]["image"], IMAGE, "{att}");
    assert_eq!(att["images"][0]["executed_actions"], 8);
    assert_eq!(att["images"][0]["pinned"], true);
    assert_eq!(ev["worker_images"][0]["source"], "executor");
    assert_eq!(ev["origin"]["tenant"], serde_json::Value::Null);
    assert!(
        detail.contains(workers[0]) && detail.contains("executed 8 action(s)"),
        "{detail}"
    );

    // 2. The forged stream, replayed unauthenticated into the same server.
    let forged = tmp.path().join("forged.bep");
    write_delimited(
        &forged,
        &forged_local_only("acme/payments-api", &rig.remote_executor),
    );
    let forged_id = bep_invocation_id(&forged);
    replay(&forged, &server.target(), None);
    let art = wait_for_proof(&proofs, &forged_id);
    let (code, checks, ev) = verify(&public, &art, &[]);
    assert_eq!(code, 1, "{checks}");
    // Intact and signed: only the claims fail.
    assert!(verify_check(&checks, "rederived").0);
    // Without the executor, the forgery would pass every client-side check;
    // with its ledger, image_pinned reads only the images the executor ran.
    for name in ["executor_forced", "remote_executions"] {
        assert!(
            verify_check(&checks, name).0,
            "{name}: {}",
            verify_check(&checks, name).1
        );
    }
    let (ok, detail) = verify_check(&checks, "image_pinned");
    assert!(!ok && detail.contains("executed no action"), "{detail}");
    assert_eq!(ev["remote_executions"], 8);
    assert_eq!(ev["attestation"]["executed"], 0);
    let (ok, detail) = verify_check(&checks, "executor_attested");
    assert!(!ok);
    assert!(
        detail.contains(&format!("executed 0 actions for invocation {forged_id}"))
            && detail.contains("claims 8 remote executions"),
        "{detail}"
    );
    let (ok, detail) = verify_check(&checks, "sources_agree");
    assert!(!ok);
    assert!(
        detail.contains("claims 8 remote executions")
            && detail.contains(&format!("the executor {} ran 0", rig.remote_executor)),
        "{detail}"
    );
    // And promote refuses it, even where unauthenticated proofs are allowed.
    let m = manifest(tmp.path(), true);
    let before = std::fs::read_to_string(&m).unwrap();
    let (code, text) = promote(&art, &m, "payments-api/package", &public, &[]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("executor_attested"), "{text}");
    assert_eq!(std::fs::read_to_string(&m).unwrap(), before);

    // 3. The unauthenticated real proof: refused unless the manifest allows it.
    let strict = manifest(tmp.path(), false);
    let (code, text) = promote(&real, &strict, "payments-api/package", &public, &[]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("no authenticated tenant"), "{text}");
    let (code, text) = promote(&real, &m, "payments-api/package", &public, &[]);
    assert_eq!(code, 0, "{text}");

    // 4. Offline: the forged BEP with the run's real execution log (8
    // linux-sandbox, 0 remote) fails the cross-check.
    let out = tmp.path().join("offline");
    let (code, text) = run_proof(&[
        "record",
        forged.to_str().unwrap(),
        "--execlog",
        fixture("local-only", "execution_log.bin").to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let art = out.join(format!("{forged_id}.proof.tar"));
    let (code, checks, _) = verify(&public, &art, &[]);
    assert_eq!(code, 1);
    let (ok, detail) = verify_check(&checks, "sources_agree");
    assert!(!ok);
    assert!(
        detail.contains("the BEP's process stats log claims 8 remote executions")
            && detail.contains("the execution log in the same artifact shows 0"),
        "{detail}"
    );
    // And it carries no executor ledger: --require-executor-attestation fails.
    let (code, checks, _) = verify(&public, &art, &["--require-executor-attestation"]);
    assert_eq!(code, 1);
    assert!(verify_check(&checks, "executor_attested")
        .1
        .contains("holds no executor ledger"));
}

#[test]
fn an_unreachable_executor_fails_closed_and_a_tenant_promotes_only_its_repos() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let tenants = tmp.path().join("tenants.toml");
    let tenant = |id: &str, token: &str, repo: &str| {
        format!(
            "[[tenant]]\nid = \"{id}\"\nlane = \"trusted-writer\"\ntokens_sha256 = [\"{}\"]\nbes_instance_names = [\"*\"]\nremote_instance_names = [\"*\"]\npools = [\"*\"]\nrepos = [\"{repo}\"]\n",
            proof_server::tenants::tenancy::hash_token(token)
        )
    };
    std::fs::write(
        &tenants,
        tenant("web", "token-web", "acme/checkout-web")
            + &tenant("pay", "token-pay", "acme/payments-api"),
    )
    .unwrap();
    // A real remote build of acme/payments-api, its BEP kept in a file.
    let bep = tmp.path().join("real.bep");
    remote_build(&rig, &tmp.path().join("ws"), "", &bep, "acme/payments-api");
    let id = bep_invocation_id(&bep);

    let serve = |name: &str, executor: &str| -> (Server, PathBuf) {
        let proofs = tmp.path().join(format!("{name}-proofs"));
        let server = Server::start(
            "127.0.0.1:0",
            &tmp.path().join(format!("{name}-store")),
            &[
                "--key",
                key.to_str().unwrap(),
                "--proofs",
                proofs.to_str().unwrap(),
                "--tenants",
                tenants.to_str().unwrap(),
                "--executor",
                executor,
                "--executor-retry-secs",
                "3",
            ],
        );
        (server, proofs)
    };
    let m = manifest(tmp.path(), false);
    let class = "payments-api/package";
    let with_tenants = ["--tenants", tenants.to_str().unwrap()];

    // The executor unreachable at finalization: a loopback port nothing
    // listens on (bound, then released).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("grpc://{}", l.local_addr().unwrap())
    };
    let (server, proofs) = serve("down", &closed);
    let t = Instant::now();
    replay(&bep, &server.target(), Some("token-pay"));
    let art = wait_for_proof(&proofs, &id);
    println!("signed after {:.1}s", t.elapsed().as_secs_f64());
    let (code, checks, ev) = verify(&public, &art, &[]);
    assert_eq!(code, 1, "{checks}");
    assert_eq!(ev["attestation"]["reachable"], false);
    assert_eq!(ev["origin"]["tenant"], "pay");
    let (ok, detail) = verify_check(&checks, "executor_attested");
    assert!(!ok);
    assert!(
        detail.contains(&format!("the executor {closed} could not be asked"))
            && detail.contains("attempt(s)"),
        "{detail}"
    );
    let (code, text) = promote(&art, &m, class, &public, &with_tenants);
    assert_ne!(code, 0, "{text}");
    drop(server);

    // Another tenant submitting acme/payments-api's build cannot promote it.
    let (server, proofs) = serve("web", &rig.remote_executor);
    replay(&bep, &server.target(), Some("token-web"));
    let art = wait_for_proof(&proofs, &id);
    let (code, checks, ev) = verify(&public, &art, &[]);
    assert_eq!(code, 0, "{checks}");
    assert_eq!(ev["origin"]["tenant"], "web");
    assert_eq!(ev["attestation"]["executed"], 8);
    let (code, text) = promote(&art, &m, class, &public, &with_tenants);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("tenant \"web\", which does not own repo acme/payments-api"),
        "{text}"
    );
    // Without the tenants file, ownership cannot be checked: refused too.
    let (code, text) = promote(&art, &m, class, &public, &[]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("pass --tenants FILE"), "{text}");
    drop(server);

    // The owning tenant can.
    let (server, proofs) = serve("pay", &rig.remote_executor);
    replay(&bep, &server.target(), Some("token-pay"));
    let art = wait_for_proof(&proofs, &id);
    let (code, text) = promote(&art, &m, class, &public, &with_tenants);
    assert_eq!(code, 0, "{text}");
    // And the PR check agrees, with the tenants file (the copied manifest's
    // other classes point at examples/platform/proofs, so look at this one).
    let dir = art.parent().unwrap();
    let check_class = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "verify",
            "--manifest",
            m.to_str().unwrap(),
            "--proofs",
            dir.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--format",
            "json",
        ];
        args.extend(extra);
        let (_, out) = run_proof(&args);
        let v: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
        v["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == class)
            .unwrap()
            .clone()
    };
    let c = check_class(&with_tenants);
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(c["mode"], "executor-backed", "{c}");
    let c = check_class(&[]);
    assert_eq!(c["ok"], false, "{c}");
    assert!(c.to_string().contains("pass --tenants FILE"), "{c}");
    drop(server);
}

/// The ListOperations pages in a proof's `executor.bin`.
fn ledger_pages(artifact: &Path) -> u64 {
    use proof_proto::ledger::{ledger_record, LedgerRecord};
    use std::io::{Read, Seek, SeekFrom};
    let scanned = proof_artifact::tar::scan(std::fs::File::open(artifact).unwrap()).unwrap();
    let m = scanned
        .member(proof_artifact::tar::EXECUTOR)
        .expect("a server-signed proof carries executor.bin");
    let mut f = std::fs::File::open(artifact).unwrap();
    f.seek(SeekFrom::Start(m.offset)).unwrap();
    let mut ledger = vec![0; m.size as usize];
    f.read_exact(&mut ledger).unwrap();
    proof_stream::delimited::split_delimited(&ledger, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| {
            matches!(
                LedgerRecord::decode(*r).unwrap().record,
                Some(ledger_record::Record::Page(_))
            )
        })
        .count() as u64
}
