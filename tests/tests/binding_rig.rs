//! Outputs bound to executions (issue 27), on real Bazel (Debian's 4.2.3)
//! against the loopback rig and `proof serve --executor`.
//!
//! The attack: a decoy workspace of 12 genrules is built remotely under
//! invocation id X (BuildGrid really executes 12 actions for X); a real
//! local build of the example spoke under the same X, edited to claim
//! "remote", is replayed into the server, which asks BuildGrid about X.
//! The executor's 12 operations are not this build's: they were queued
//! before the stream started and none of them produced a file the stream
//! claims, so `outputs_bound` fails and names the spoke's targets. The same
//! forged stream with its `file://` URIs rewritten to the `bytestream://`
//! digests of the locally built files fails too. A real remote build (and
//! test) of the spoke binds every target and verifies.
//!
//! Three Bazel runs: the decoy, one real remote `test //...`, one local
//! build. Needs the rig: `bash tests/run-all.sh`, or
//! `. tests/rig/env.sh` (see tests/run-all.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use proof_e2e::forge::{claim_remote, Claimed, IMAGE};
use proof_e2e::{
    action_nonce, bep_invocation_id, delimited_records, keypair, rig, run_proof, verify_check,
    verify_json, wait_for_proof, Server,
};
use proof_proto::bep::{build_event, file, BuildEvent, File};
use prost::Message;

/// The spoke's targets with outputs built by an action.
const BUILT: [&str; 5] = [
    "//:greeter",
    "//:greeting",
    "//:hello",
    "//:upper",
    "//:who_ran_me",
];
/// Seconds between the decoy's last operation and the forged stream's
/// start: more than the window's slack (60 s).
const DECOY_GAP: Duration = Duration::from_secs(62);

fn fresh_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("/proc/sys/kernel/random/uuid")
        .trim()
        .to_string()
}

fn write_delimited(path: &Path, events: &[Vec<u8>]) {
    let mut buf = Vec::new();
    for e in events {
        proof_stream::delimited::encode_varint(e.len() as u64, &mut buf);
        buf.extend_from_slice(e);
    }
    std::fs::write(path, buf).unwrap();
}

fn replay(file: &Path, target: &str) {
    let (code, text) = run_proof(&[
        "replay",
        file.to_str().unwrap(),
        "--to",
        target,
        "--max-retries",
        "0",
    ]);
    assert_eq!(code, 0, "{text}");
}

/// A `proof serve --executor RIG` with its own store and proofs directory.
fn serve(tmp: &Path, name: &str, key: &Path, executor: &str) -> (Server, PathBuf) {
    let proofs = tmp.join(format!("{name}-proofs"));
    let server = Server::start(
        "127.0.0.1:0",
        &tmp.join(format!("{name}-store")),
        &[
            "--key",
            key.to_str().unwrap(),
            "--proofs",
            proofs.to_str().unwrap(),
            "--executor",
            executor,
        ],
    );
    (server, proofs)
}

/// The local build's stream edited to claim remote execution (issue #10):
/// the local runners renamed "remote" in the process summaries, and
/// --remote_executor, a pinned image and --spawn_strategy=remote added to
/// the canonical command line. With `rewrite`, each output's `file://` URI
/// becomes the `bytestream://` digest of the file it names.
fn forge(events: &[Vec<u8>], executor: &str, rewrite: bool) -> Vec<Vec<u8>> {
    let host = executor.trim_start_matches("grpc://");
    let mut edited = (0, 0, 0);
    let fix = |f: &mut File, n: &mut u32| {
        let Some(file::File::Uri(u)) = &f.file else {
            return;
        };
        let Some(path) = u.strip_prefix("file://") else {
            return;
        };
        let out = Command::new("sha256sum").arg(path).output().unwrap();
        assert!(out.status.success(), "sha256sum {path}");
        let hash = String::from_utf8(out.stdout).unwrap()[..64].to_string();
        let size = std::fs::metadata(path).unwrap().len();
        f.file = Some(file::File::Uri(format!(
            "bytestream://{host}/blobs/{hash}/{size}"
        )));
        *n += 1;
    };
    let out = events
        .iter()
        .map(|bytes| {
            let mut ev = BuildEvent::decode(bytes.as_slice()).unwrap();
            match claim_remote(&mut ev, executor) {
                Some(Claimed::CommandLine) => edited.1 += 1,
                Some(_) => edited.0 += 1,
                None => {}
            }
            match ev.payload.as_mut() {
                Some(build_event::Payload::NamedSetOfFiles(s)) if rewrite => {
                    for f in &mut s.files {
                        fix(f, &mut edited.2);
                    }
                }
                // Bazel 4.2.3 lists the files again as important_output.
                Some(build_event::Payload::Completed(c)) if rewrite => {
                    for f in &mut c.important_output {
                        fix(f, &mut edited.2);
                    }
                }
                _ => {}
            }
            ev.encode_to_vec()
        })
        .collect();
    assert_eq!(
        (edited.0, edited.1),
        (2, 1),
        "the local stream changed shape"
    );
    if rewrite {
        assert!(edited.2 >= 12, "only {} URIs rewritten", edited.2);
    }
    out
}

fn binding_of<'a>(ev: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    let t = &ev["output_binding"]["targets"][label];
    assert!(
        t.is_object(),
        "no binding for {label}: {}",
        ev["output_binding"]
    );
    t
}

#[test]
fn a_decoy_under_the_same_invocation_id_binds_nothing_and_a_real_build_binds_everything() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let x = fresh_uuid();

    // 1. The decoy: 12 genrules executed remotely under X, no BES.
    let decoy = tmp.path().join("decoy");
    rig.spoke(&decoy);
    let rules: String = (0..12)
        .map(|i| {
            format!(
                "genrule(name = \"decoy{i}\", outs = [\"decoy{i}.txt\"], cmd = \"echo decoy {i} {x} > $@\")\n"
            )
        })
        .collect();
    std::fs::write(decoy.join("BUILD.bazel"), rules).unwrap();
    let out = rig.bazel(
        &decoy,
        &[
            "build",
            "//:all",
            &format!("--invocation_id={x}"),
            &format!("--remote_executor={}", rig.remote_executor),
            "--spawn_strategy=remote",
            "--remote_local_fallback=false",
            "--noremote_accept_cached",
            &format!("--remote_default_exec_properties=container-image={IMAGE}"),
        ],
    );
    rig.shutdown(&decoy);
    assert_eq!(out.code, 0, "decoy build failed:\n{}", out.output);
    assert!(out.output.contains("12 remote"), "{}", out.output);
    let decoy_done = Instant::now();

    // 2. A real remote build and test of the spoke through --config=proof,
    // every action executed: every target bound.
    let (server, proofs) = serve(tmp.path(), "real", &key, &rig.remote_executor);
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let real_bep = tmp.path().join("real.bep");
    let out = rig.bazel(
        &ws,
        &[
            "test",
            "--config=proof",
            "//...",
            &format!("--bes_backend={}", server.target()),
            "--noremote_accept_cached",
            &action_nonce("BIND"),
            &format!("--build_event_binary_file={}", real_bep.display()),
        ],
    );
    rig.shutdown(&ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    let id = bep_invocation_id(&real_bep);
    let real = wait_for_proof(&proofs, &id);
    let (code, checks, report) = verify_json(&public, &real, &[]);
    let ev = &report["evidence"];
    let (ok, detail) = verify_check(&checks, "outputs_bound");
    println!("real build: outputs_bound: {detail}");
    assert!(ok, "{detail}");
    assert_eq!(code, 0, "{checks}");
    let b = &ev["output_binding"];
    for label in BUILT.iter().chain(&["//:hello_test"]) {
        assert_eq!(binding_of(ev, label)["status"], "bound", "{label}: {b}");
    }
    assert_eq!(b["targets_unbound"], 0, "{b}");
    assert_eq!(b["targets_not_applicable"], 0, "{b}");
    assert_eq!(b["operations_outside"], 0, "{b}");
    // hello_test: test.log and test.xml bind through the test's own
    // actions; its script and Bazel's symlink to it are source files.
    let t = binding_of(ev, "//:hello_test");
    assert_eq!(t["files_bound"], 2, "{t}");
    assert_eq!(t["source_files"], 2, "{t}");
    assert!(detail.contains("6 built target(s) bound"), "{detail}");
    assert!(
        b["window"]["times"]
            .as_str()
            .unwrap()
            .starts_with("the server's own times"),
        "{b}"
    );
    drop(server);
    let real_done = Instant::now();

    // 3. A real local build of the spoke under X, started more than the
    // window's slack after the decoy's last operation.
    if let Some(wait) = DECOY_GAP.checked_sub(decoy_done.elapsed()) {
        std::thread::sleep(wait);
    }
    let local_ws = tmp.path().join("local");
    rig.spoke(&local_ws);
    let local_bep = tmp.path().join("local.bep");
    let out = rig.bazel(
        &local_ws,
        &[
            "build",
            "//...",
            &format!("--invocation_id={x}"),
            &format!("--build_event_binary_file={}", local_bep.display()),
        ],
    );
    assert_eq!(out.code, 0, "local build failed:\n{}", out.output);
    assert!(out.output.contains("linux-sandbox"), "{}", out.output);
    let local = delimited_records(&local_bep);

    // 4. The forged stream under X: signed, and unbound.
    let forged = tmp.path().join("forged.bep");
    write_delimited(&forged, &forge(&local, &rig.remote_executor, false));
    assert_eq!(bep_invocation_id(&forged), x);
    let (server, proofs) = serve(tmp.path(), "forged", &key, &rig.remote_executor);
    replay(&forged, &server.target());
    let art = wait_for_proof(&proofs, &x);
    let (code, checks, report) = verify_json(&public, &art, &[]);
    let ev = &report["evidence"];
    assert_eq!(code, 1, "{checks}");
    assert!(verify_check(&checks, "rederived").0);
    // The executor did run 12 actions for X, but before the stream: the
    // count is borrowed, and executor_attested counts only the window.
    assert_eq!(ev["attestation"]["executed"], 12, "{}", ev["attestation"]);
    let (ok, detail) = verify_check(&checks, "executor_attested");
    assert!(!ok);
    assert!(
        detail.contains(&format!(
            "only 0 of the executor's 12 executed action(s) for invocation {x} lie inside the stream's window"
        )) && detail.contains("the client claims 8"),
        "{detail}"
    );
    let (ok, detail) = verify_check(&checks, "outputs_bound");
    println!("forged (file://): outputs_bound: {detail}");
    assert!(!ok);
    for label in BUILT {
        assert!(detail.contains(label), "{label} not named: {detail}");
        let t = binding_of(ev, label);
        assert_eq!(t["status"], "unbound", "{label}: {t}");
        assert!(
            t["unbound"][0]["why"]
                .as_str()
                .unwrap()
                .contains("file:// URI"),
            "{t}"
        );
    }
    assert!(
        detail.contains("a file:// URI: a local output")
            && detail.contains(&format!("invocation {x}")),
        "{detail}"
    );
    // The decoy's operations are named, and none counts.
    let b = &ev["output_binding"];
    assert_eq!(b["operations_outside"], 12, "{b}");
    assert_eq!(b["operations_in_window"], 0, "{b}");
    assert!(b["outside"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["why"] == "queued before the stream started: not this build's"));
    assert!(
        detail.contains(
            "12 executor operation(s) outside the stream's window do not count: 12 queued before the stream started: not this build's"
        ),
        "{detail}"
    );
    drop(server);

    // 5. The same stream with bytestream:// digests of the local outputs:
    // the executor never produced them for X.
    let rewritten = tmp.path().join("rewritten.bep");
    write_delimited(&rewritten, &forge(&local, &rig.remote_executor, true));
    rig.shutdown(&local_ws);
    let (server, proofs) = serve(tmp.path(), "rewritten", &key, &rig.remote_executor);
    replay(&rewritten, &server.target());
    let art = wait_for_proof(&proofs, &x);
    let (code, checks, report) = verify_json(&public, &art, &[]);
    let ev = &report["evidence"];
    assert_eq!(code, 1, "{checks}");
    let (ok, detail) = verify_check(&checks, "outputs_bound");
    println!("forged (bytestream://): outputs_bound: {detail}");
    assert!(!ok);
    for label in BUILT {
        assert!(detail.contains(label), "{label} not named: {detail}");
        let t = binding_of(ev, label);
        assert_eq!(t["status"], "unbound", "{label}: {t}");
        let f = &t["unbound"][0];
        assert!(f["digest"].is_string(), "{t}");
        assert!(
            f["why"].as_str().unwrap().starts_with(&format!(
                "the executor produced no output with this digest for invocation {x}, and no earlier execution the server witnessed produced it"
            )),
            "{t}"
        );
    }
    assert_eq!(ev["output_binding"]["operations_outside"], 12);
    drop(server);

    // 6. The real build's own stream, replayed more than the slack after
    // it ran: the client's stamps are unchanged, but the server received
    // it later than the executor's operations, so none of them counts.
    if let Some(wait) = DECOY_GAP.checked_sub(real_done.elapsed()) {
        std::thread::sleep(wait);
    }
    let (server, proofs) = serve(tmp.path(), "late", &key, &rig.remote_executor);
    replay(&real_bep, &server.target());
    let art = wait_for_proof(&proofs, &id);
    let (code, checks, report) = verify_json(&public, &art, &[]);
    let ev = &report["evidence"];
    assert_eq!(code, 1, "{checks}");
    let (ok, detail) = verify_check(&checks, "outputs_bound");
    println!("late replay: outputs_bound: {detail}");
    assert!(!ok);
    let b = &ev["output_binding"];
    assert_eq!(b["operations_in_window"], 0, "{b}");
    assert!(b["operations_outside"].as_u64().unwrap() >= 8, "{b}");
    for label in BUILT {
        let t = binding_of(ev, label);
        assert_eq!(t["status"], "unbound", "{label}: {t}");
        assert_eq!(
            t["unbound"][0]["why"], "produced only by an operation outside the stream's window",
            "{t}"
        );
    }
    assert!(!verify_check(&checks, "executor_attested").0);
    drop(server);
}
