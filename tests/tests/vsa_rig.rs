//! SLSA verification summaries (docs/proof-format.md §8), checked with
//! standard tools: on the loopback rig, `proof serve --executor` writes
//! `ID.vsa.dsse.json` beside the proof of a real remote build of the spoke
//! (PASSED, every rbe-proof level) and of the forged spoke stream (a real
//! local-only Bazel 4.2.3 run edited to claim 8 remote executions: FAILED).
//! securesystemslib (in-toto's DSSE library) verifies both envelopes, the
//! proof's and the VSA's, under the server's key, and the in-toto
//! attestation bindings parse the statements and the VSA predicate
//! (tests/interop/check_attestation.py, in the rig's venv). `proof
//! verify-vsa` refuses a FAILED summary, a missing level, another
//! artifact's summary and another key's; `proof verify --vsa-out` writes
//! the offline verdict's summary under the verifier's own key; a summary
//! lost to a crash after the proof was written is written at the next
//! start. One Bazel build.
//! Needs the rig: `bash tests/run-all.sh`, or `. /work/rig-env.sh`-style
//! `set -a; . /tmp/rbe-proof-rig/run/rig.env; set +a`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use proof_e2e::{
    bep_invocation_id, keypair, repo_root, rig, run_proof, wait_for_proof, Rig, Server,
};

const PUBLIC_URL: &str = "https://proofs.example.invalid";
const ALL_LEVELS: [&str; 4] = [
    "RBE_PROOF_SIGNED_EVIDENCE_V1",
    "RBE_PROOF_REMOTE_CLAIMED_V1",
    "RBE_PROOF_EXECUTOR_ATTESTED_V1",
    "RBE_PROOF_OUTPUTS_BOUND_V1",
];

/// A fresh UUID-shaped id (time and pid), never seen by the shared executor.
fn fresh_id(tag: u16) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:08x}-{tag:04x}-4{:03x}-8{:03x}-{:012x}",
        std::process::id(),
        (n >> 48) as u16 & 0xfff,
        (n >> 36) as u16 & 0xfff,
        n as u64 & 0xffff_ffff_ffff
    )
}

/// The rig's venv python (securesystemslib and in-toto-attestation are
/// installed there by tests/rig/start-rig.sh).
fn python() -> PathBuf {
    let dir = std::env::var("RIG_DIR").unwrap_or_else(|_| "/tmp/rbe-proof-rig".into());
    PathBuf::from(dir).join("venv/bin/python")
}

/// tests/interop/check_attestation.py ENVELOPE PUB: (exit code, its JSON).
fn standard_check(envelope: &Path, public: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(python())
        .arg(repo_root().join("tests/interop/check_attestation.py"))
        .arg(envelope)
        .arg(public)
        .output()
        .expect("run the rig venv's python (tests/rig/start-rig.sh --install-only creates it)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "check_attestation.py {} {} -> {:?}\n{stdout}{stderr}",
        envelope.display(),
        public.display(),
        out.status.code()
    );
    let v = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON from check_attestation.py ({e}): {stdout}{stderr}"));
    (out.status.code().unwrap_or(-1), v)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The artifact's statement.dsse.json, written beside it for the Python check.
fn extract_statement(artifact: &Path, dir: &Path) -> (PathBuf, Vec<u8>) {
    let f = std::fs::File::open(artifact).unwrap();
    let bytes = proof_artifact::vsa::read_statement(std::io::BufReader::new(f))
        .expect("the artifact starts with its statement");
    let out = dir.join(format!(
        "{}.statement.dsse.json",
        artifact.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&out, &bytes).unwrap();
    (out, bytes)
}

fn wait_for_file(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no {} within 60 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real remote build of a fresh copy of the spoke, every action executed.
fn remote_build(rig: &Rig, ws: &Path, bes: &str, bep: &Path) {
    rig.spoke(ws);
    let nonce = proof_e2e::action_nonce("VSA");
    let out = rig.bazel(
        ws,
        &[
            "build",
            "--config=proof",
            "//...",
            &format!("--bes_backend={bes}"),
            "--noremote_accept_cached",
            &nonce,
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    rig.shutdown(ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    assert!(out.output.contains("8 remote"), "{}", out.output);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_signed_proof_has_a_vsa_that_standard_tools_verify_and_a_forgery_says_failed() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let proofs = tmp.path().join("proofs");
    let store = tmp.path().join("store");
    let args = [
        "--key",
        s(&key),
        "--proofs",
        s(&proofs),
        "--executor",
        &rig.remote_executor,
        "--executor-retry-secs",
        "5",
        "--public-url",
        PUBLIC_URL,
    ];
    let mut server = Server::start("127.0.0.1:0", &store, &args);

    // 1. A real remote build: PASSED, every level.
    let bep = tmp.path().join("real.bep");
    remote_build(&rig, &tmp.path().join("ws"), &server.target(), &bep);
    let real = bep_invocation_id(&bep);
    let real_tar = wait_for_proof(&proofs, &real);
    let real_vsa = proofs.join(format!("{real}.vsa.dsse.json"));
    wait_for_file(&real_vsa);
    let (stmt_path, stmt) = extract_statement(&real_tar, tmp.path());
    let (code, v) = standard_check(&stmt_path, &public);
    assert_eq!(
        code, 0,
        "securesystemslib rejects the proof's envelope: {v}"
    );
    assert_eq!(
        v["predicateType"],
        "https://rbe-proof.dev/remote-execution/v1"
    );
    let (code, v) = standard_check(&real_vsa, &public);
    assert_eq!(code, 0, "securesystemslib rejects the VSA: {v}");
    assert_eq!(
        v["predicateType"],
        "https://slsa.dev/verification_summary/v1"
    );
    assert_eq!(v["verificationResult"], "PASSED", "{v}");
    assert_eq!(v["verifiedLevels"], serde_json::json!(ALL_LEVELS), "{v}");
    assert_eq!(
        v["subject"][0]["sha256"],
        sha256_hex(&std::fs::read(&real_tar).unwrap())
    );
    assert_eq!(v["subject"][0]["name"], format!("{real}.proof.tar"));
    assert_eq!(
        v["inputAttestations"][0]["sha256"],
        sha256_hex(&stmt),
        "{v}"
    );
    assert_eq!(v["verifier"], PUBLIC_URL);
    assert_eq!(v["resourceUri"], format!("{PUBLIC_URL}/invocations/{real}"));
    assert!(
        v["policy"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("sources_agree,executor_attested,outputs_bound"),
        "{v}"
    );
    let (code, out) = run_proof(&[
        "verify-vsa",
        s(&real_vsa),
        "--key",
        s(&public),
        "--expect-level",
        "RBE_PROOF_EXECUTOR_ATTESTED_V1",
        "--expect-level",
        "RBE_PROOF_OUTPUTS_BOUND_V1",
        "--artifact",
        s(&real_tar),
    ]);
    assert_eq!(code, 0, "{out}");

    // 2. The forged stream: its proof is signed, its VSA says FAILED.
    let forged = fresh_id(0x75a);
    proof_e2e::replay_stream(
        &server.target(),
        &forged,
        proof_e2e::forge::forged_local_only(&rig.remote_executor, &forged),
    );
    let forged_tar = wait_for_proof(&proofs, &forged);
    let forged_vsa = proofs.join(format!("{forged}.vsa.dsse.json"));
    wait_for_file(&forged_vsa);
    let (code, v) = standard_check(&forged_vsa, &public);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verificationResult"], "FAILED", "{v}");
    assert_eq!(v["verifiedLevels"], serde_json::json!(["FAILED"]), "{v}");
    let (code, out) = run_proof(&["verify-vsa", s(&forged_vsa), "--key", s(&public)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("verificationResult is FAILED"), "{out}");

    // The cheapest forgery of a consumer's check: the real build's PASSED
    // summary presented for the forged artifact. --artifact catches it.
    let (code, out) = run_proof(&[
        "verify-vsa",
        s(&real_vsa),
        "--key",
        s(&public),
        "--artifact",
        s(&forged_tar),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is of an artifact with sha256"), "{out}");

    // 3. Offline (the PR check): the verifier's own key signs its summary.
    let vdir = tmp.path().join("verifier");
    std::fs::create_dir_all(&vdir).unwrap();
    let (vkey, vpub) = keypair(&vdir);
    let offline = tmp.path().join("offline.vsa.dsse.json");
    let (code, out) = run_proof(&[
        "verify",
        s(&real_tar),
        "--key",
        s(&public),
        "--vsa-out",
        s(&offline),
        "--vsa-key",
        s(&vkey),
        "--vsa-verifier-id",
        "https://ci.example.invalid/pr-check",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, v) = standard_check(&offline, &vpub);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verificationResult"], "PASSED");
    assert_eq!(v["verifier"], "https://ci.example.invalid/pr-check");
    assert_eq!(v["resourceUri"], format!("urn:rbe-proof:invocation:{real}"));
    // Under the server's key it is not the server's summary.
    let (code, v) = standard_check(&offline, &public);
    assert_eq!(code, 1, "{v}");
    let (code, out) = run_proof(&["verify-vsa", s(&offline), "--key", s(&public)]);
    assert_eq!(code, 1, "{out}");
    // Offline, the forged artifact's summary says FAILED too.
    let offline_forged = tmp.path().join("offline-forged.vsa.dsse.json");
    let (code, out) = run_proof(&[
        "verify",
        s(&forged_tar),
        "--key",
        s(&public),
        "--vsa-out",
        s(&offline_forged),
        "--vsa-key",
        s(&vkey),
    ]);
    assert_eq!(code, 1, "{out}");
    let (code, v) = standard_check(&offline_forged, &vpub);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verificationResult"], "FAILED", "{v}");

    // The cheapest forgery that reaches RBE_PROOF_REMOTE_CLAIMED_V1: the
    // same forged stream recorded offline (no executor ledger) by anyone
    // with a key passes the client-side checks: PASSED with only the first
    // two levels, which is why consumers require the attested ones.
    let forged_bep = tmp.path().join("forged.bep");
    let mut bytes = Vec::new();
    for ev in proof_e2e::forge::forged_local_only(&rig.remote_executor, &fresh_id(0x75b)) {
        prost::encoding::encode_varint(ev.len() as u64, &mut bytes);
        bytes.extend_from_slice(&ev);
    }
    std::fs::write(&forged_bep, &bytes).unwrap();
    let rec = tmp.path().join("recorded");
    let (code, out) = run_proof(&[
        "record",
        s(&forged_bep),
        "--key",
        s(&vkey),
        "--out",
        s(&rec),
    ]);
    assert_eq!(code, 0, "{out}");
    let rec_tar = std::fs::read_dir(&rec)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rec_vsa = tmp.path().join("recorded.vsa.dsse.json");
    let (code, out) = run_proof(&[
        "verify",
        s(&rec_tar),
        "--key",
        s(&vpub),
        "--vsa-out",
        s(&rec_vsa),
        "--vsa-key",
        s(&vkey),
    ]);
    assert_eq!(code, 0, "the forgery passes every client-side check: {out}");
    let (code, v) = standard_check(&rec_vsa, &vpub);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verificationResult"], "PASSED", "{v}");
    assert_eq!(
        v["verifiedLevels"],
        serde_json::json!([
            "RBE_PROOF_SIGNED_EVIDENCE_V1",
            "RBE_PROOF_REMOTE_CLAIMED_V1"
        ]),
        "{v}"
    );
    let (code, out) = run_proof(&[
        "verify-vsa",
        s(&rec_vsa),
        "--key",
        s(&vpub),
        "--expect-level",
        "RBE_PROOF_EXECUTOR_ATTESTED_V1",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("does not name RBE_PROOF_EXECUTOR_ATTESTED_V1"),
        "{out}"
    );

    // 4. A crash after the proof, before its summary: the pending marker
    // is still there at the next start, and the summary is written then.
    server.kill9();
    std::fs::remove_file(&real_vsa).unwrap();
    std::fs::write(proofs.join(".pending").join(&real), b"").unwrap();
    let _server = Server::start("127.0.0.1:0", &store, &args);
    wait_for_file(&real_vsa);
    let (code, v) = standard_check(&real_vsa, &public);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verificationResult"], "PASSED", "{v}");
    assert_eq!(
        v["subject"][0]["sha256"],
        sha256_hex(&std::fs::read(&real_tar).unwrap()),
        "the proof itself was not replaced"
    );
}
