//! Real Bazel (Debian's 4.2.3) on the loopback rig, streaming to `proof serve`.
//! Needs the rig: run with `bash tests/run-all.sh`.

use std::time::Instant;

use proof_e2e::{
    bep_invocation_id, delimited_records, keypair, rig, stored_events, wait_for_file, Server,
};
use proof_store::{FsStore, Store};

/// Lines in which Bazel complains about the Build Event Service.
fn bes_complaints(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains("WARNING") || l.contains("ERROR"))
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("bes") || l.contains("build event") || l.contains("upload")
        })
        .collect()
}

/// A nonce in every action key, so the rig's shared action cache never
/// answers for this test's actions.
fn nonce() -> String {
    format!(
        "--action_env=PROOF_TEST_NONCE={}",
        std::process::id() as u128 * 1_000_003 + Instant::now().elapsed().as_nanos()
    )
}

#[test]
fn bazel_build_and_test_stream_to_proof_serve_losslessly() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let store_dir = tmp.path().join("store");
    let proofs = tmp.path().join("proofs");
    let mut server = Server::start(
        "127.0.0.1:0",
        &store_dir,
        &[
            "--key",
            key.to_str().unwrap(),
            "--proofs",
            proofs.to_str().unwrap(),
        ],
    );
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let bes = format!("--bes_backend={}", server.target());
    let nonce = nonce();
    let mut runs = Vec::new();
    for (cmd, name) in [("build", "build.bep"), ("test", "test.bep")] {
        let bep = tmp.path().join(name);
        let out = rig.bazel(
            &ws,
            &[
                cmd,
                "--config=proof",
                "//...",
                &bes,
                &nonce,
                &format!("--build_event_binary_file={}", bep.display()),
            ],
        );
        assert_eq!(out.code, 0, "bazel {cmd} failed:\n{}", out.output);
        assert!(
            bes_complaints(&out.output).is_empty(),
            "Bazel complained about BES: {:?}",
            bes_complaints(&out.output)
        );
        assert!(
            out.output.contains(" remote."),
            "no remote processes in:\n{}",
            out.output
        );
        runs.push((cmd, bep));
    }
    rig.shutdown(&ws);
    let ids: Vec<String> = runs.iter().map(|(_, bep)| bep_invocation_id(bep)).collect();
    for id in &ids {
        wait_for_file(&proofs.join(format!("{id}.proof.tar")), 60);
    }
    // kill -9 the server: the store must come back with everything acked.
    server.kill9();
    let store = FsStore::open(&store_dir).unwrap();
    for ((cmd, bep), id) in runs.iter().zip(&ids) {
        let file = delimited_records(bep);
        let stored = stored_events(&store, id);
        assert_eq!(stored.len(), file.len(), "{cmd}: event count");
        // Bazel's file and BES transports are independent writers of the same
        // events: compare event for event, byte for byte, in any order.
        let (mut a, mut b) = (stored.clone(), file.clone());
        a.sort();
        b.sort();
        assert!(
            a == b,
            "{cmd}: the stored stream differs from --build_event_binary_file"
        );
        let rec = store.get(id).unwrap().unwrap();
        assert!(
            rec.state.complete,
            "{cmd}: {:?}",
            rec.state.incomplete_reason
        );
        assert!(rec.state.saw_stream_finished);
        assert_eq!(
            rec.lifecycle.build_finished_status.as_deref(),
            Some("COMMAND_SUCCEEDED"),
            "{cmd}"
        );
        let summary = rec.summary.unwrap();
        assert_eq!(summary["invocation_id"], id.as_str());
        assert_eq!(summary["command"], *cmd);
        assert_eq!(summary["exit_code"]["code"], 0);
        // The served artifact verifies against the server's public key.
        let vk =
            proof_artifact::load_public_pem(&std::fs::read_to_string(&public).unwrap()).unwrap();
        let report = proof_artifact::verify_path(
            &proofs.join(format!("{id}.proof.tar")),
            &[vk],
            &Default::default(),
        )
        .unwrap();
        assert!(report.ok, "{cmd}: {:?}", report.first_failure());
        let ev = report.evidence.unwrap();
        assert!(ev.processes.remote_executions.unwrap() > 0, "{cmd}");
        if *cmd == "test" {
            assert_eq!(
                ev.tests["//:hello_test"].strategy.as_deref(),
                Some("remote")
            );
        }
    }
}

/// Proofs recorded offline from real runs: the good one verifies, each bad
/// run fails the check that names its problem.
#[test]
fn real_runs_pass_or_fail_policy_for_the_right_reason() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let vk = proof_artifact::load_public_pem(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let nonce = nonce();
    // Bazel 4.2.3 crashes on a second container-image key, so this case
    // spells the remote flags out instead of using --config=proof.
    let executor = format!("--remote_executor={}", rig.remote_executor);
    let tag_image =
        "--remote_default_exec_properties=container-image=docker://example.invalid/worker:latest";
    // (name, bazel args, expected exit code, first failing check or None)
    let cases: Vec<(&str, Vec<&str>, i32, Option<&str>)> = vec![
        (
            "remote",
            vec!["build", "--config=proof", "//...", &nonce],
            0,
            None,
        ),
        (
            "cache-hits-only",
            vec!["build", "--config=proof", "//...", &nonce],
            0,
            Some("remote_executions"),
        ),
        (
            "local-only",
            vec!["build", "//...", &nonce, "--spawn_strategy=local"],
            0,
            Some("executor_forced"),
        ),
        (
            "executor-emptied",
            vec![
                "build",
                "--config=proof",
                "//...",
                &nonce,
                "--remote_executor=",
                "--spawn_strategy=local",
            ],
            0,
            Some("executor_forced"),
        ),
        (
            "tag-only-image",
            vec![
                "build",
                "//...",
                &executor,
                "--spawn_strategy=remote",
                "--remote_local_fallback=false",
                &nonce,
                tag_image,
            ],
            0,
            Some("image_pinned"),
        ),
        (
            "failed-build",
            vec!["build", "--config=proof", "//failing:broken", &nonce],
            1,
            Some("build_succeeded"),
        ),
    ];
    let proofs = tmp.path().join("proofs");
    std::fs::create_dir_all(&proofs).unwrap();
    let sk = proof_artifact::load_private_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
    for (name, args, code, failing) in cases {
        // Every case after the first starts from a clean output tree, so
        // actions run (or are looked up) again.
        if name != "remote" {
            rig.bazel(&ws, &["clean"]);
        }
        let bep = tmp.path().join(format!("{name}.bep"));
        let execlog = tmp.path().join(format!("{name}.execlog"));
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        full.push(format!("--build_event_binary_file={}", bep.display()));
        full.push(format!("--execution_log_binary_file={}", execlog.display()));
        full.push("--bes_backend=".into());
        let full_ref: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = rig.bazel(&ws, &full_ref);
        assert_eq!(out.code, code, "{name}: bazel exit code\n{}", out.output);
        let rec = proof_artifact::record_delimited(
            std::fs::File::open(&bep).unwrap(),
            Some(&execlog),
            &sk,
            &proofs,
        )
        .unwrap_or_else(|e| panic!("{name}: record: {e}"));
        let report = proof_artifact::verify_path(&rec.path, &[vk], &Default::default()).unwrap();
        for integrity in ["envelope", "signature", "digests", "rederived"] {
            assert!(
                report.check(integrity).unwrap().ok,
                "{name}: {integrity} must pass on an honest artifact"
            );
        }
        match failing {
            None => assert!(report.ok, "{name}: {:?}", report.first_failure()),
            Some("build_succeeded") => {
                // Bazel 4.2.3 leaves a failed remote spawn out of its process
                // summary, so remote_executions fails too; the exit code is
                // the reason that matters here.
                let c = report.check("build_succeeded").unwrap();
                assert!(!c.ok && c.detail.contains("BUILD_FAILURE"), "{name}: {c:?}");
                assert!(!report.ok);
            }
            Some(check) => {
                let first = report
                    .first_failure()
                    .unwrap_or_else(|| panic!("{name}: verify passed"));
                assert_eq!(first.name, check, "{name}: first failure was {first:?}");
            }
        }
        if name == "executor-emptied" {
            let ev = report.evidence.as_ref().unwrap();
            assert_eq!(
                ev.executor.remote_executor, None,
                "the emptied executor counts as unset"
            );
        }
    }
    rig.shutdown(&ws);
}
