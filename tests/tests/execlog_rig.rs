//! The execution log held against the executor's ledger (issue 27, item
//! 4), on real Bazel (Debian's 4.2.3) against the loopback rig, recorded
//! offline with `proof record BEP --execlog LOG --executor URL`.
//!
//! Bazel 4.2.3's `--execution_log_binary_file` gives no action digest
//! (SpawnExec field 19), so each remote spawn is matched by its outputs
//! (`actual_outputs`: paths and digests) to an executed operation of the
//! invocation. One Bazel build, one decoy build, five recordings:
//! 1. the real build: every remote spawn matched, `sources_agree` passes;
//! 2. the real log with one spawn's output digest changed: that spawn is
//!    unmatched and the operation that really ran it is named as not in
//!    the log; verify exit 1;
//! 3. the real log with each spawn given the action digest the executor
//!    reported for its operation (key (a), as a Bazel 5+ log would carry
//!    it; made here from the real ledger because no real Bazel >= 5 log of
//!    a remote build is at hand): matched by digest; one digest changed:
//!    exit 1;
//! 4. a decoy workspace built remotely under the same invocation id right
//!    after the build (inside the window the stream claims), 6 actions on the build's
//!    instance "" and 6 on the other instance "main": all 12 operations
//!    are named as not in the log, exit 1. (BuildGrid 0.4.4 lists the
//!    "main" ones under "" too: an operation does not name its instance.)
//!
//! Needs the rig: `bash tests/run-all.sh`, or `. tests/rig/env.sh` first.

use std::path::{Path, PathBuf};
use std::process::Command;

use proof_e2e::forge::IMAGE;
use proof_e2e::{
    action_nonce, bep_invocation_id, keypair, rig, run_proof, verify_check, verify_json,
};
use proof_proto::bep::{build_event, BuildEvent};
use proof_proto::execlog::{Digest as LogDigest, SpawnExec};
use proof_proto::ledger::{ledger_record, LedgerRecord};
use proof_proto::reapi::{ExecuteOperationMetadata, ExecuteResponse};
use prost::Message;
use sha2::Digest as _;

fn fresh_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("/proc/sys/kernel/random/uuid")
        .trim()
        .to_string()
}

fn read_log(path: &Path) -> Vec<SpawnExec> {
    let bytes = std::fs::read(path).unwrap();
    proof_stream::delimited::split_delimited(&bytes, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| SpawnExec::decode(r).unwrap())
        .collect()
}

fn write_log(path: &Path, spawns: &[SpawnExec]) {
    let records: Vec<Vec<u8>> = spawns.iter().map(Message::encode_to_vec).collect();
    write_delimited(path, &records);
}

/// `proof record BEP --execlog LOG --executor RIG` into `out`; the proof.
fn record(rig_exec: &str, key: &Path, bep: &Path, log: &Path, out: &Path) -> PathBuf {
    let (code, text) = run_proof(&[
        "record",
        bep.to_str().unwrap(),
        "--execlog",
        log.to_str().unwrap(),
        "--executor",
        rig_exec,
        "--key",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    out.join(format!("{}.proof.tar", bep_invocation_id(bep)))
}

/// The executed operations in an artifact's executor.bin: (operation name,
/// action digest, output file paths).
fn ledger_operations(artifact: &Path, tmp: &Path) -> Vec<(String, LogDigest, Vec<String>)> {
    let dir = tmp.join("unpacked");
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("tar")
        .args([
            "-xf",
            artifact.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
            "executor.bin",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(dir.join("executor.bin")).unwrap();
    let mut out = Vec::new();
    for r in proof_stream::delimited::split_delimited(&bytes, usize::MAX).unwrap() {
        let Some(ledger_record::Record::Page(p)) = LedgerRecord::decode(r).unwrap().record else {
            continue;
        };
        for op in p.response.iter().flat_map(|r| &r.operations) {
            let meta =
                ExecuteOperationMetadata::decode(op.metadata.as_ref().unwrap().value.as_slice())
                    .unwrap();
            let Some(proof_proto::longrunning::operation::Result::Response(a)) = &op.result else {
                continue;
            };
            let resp = ExecuteResponse::decode(a.value.as_slice()).unwrap();
            if resp.cached_result {
                continue;
            }
            let d = meta.action_digest.unwrap();
            let paths = resp
                .result
                .map(|r| r.output_files.into_iter().map(|f| f.path).collect())
                .unwrap_or_default();
            let prefix = format!("{}/", p.instance_name);
            out.push((
                op.name
                    .strip_prefix(&prefix)
                    .unwrap_or(&op.name)
                    .to_string(),
                LogDigest {
                    hash: d.hash,
                    size_bytes: d.size_bytes,
                    ..Default::default()
                },
                paths,
            ));
        }
    }
    out
}

/// `from`'s events with BuildFinished's time moved `secs` later.
fn widen(from: &Path, to: &Path, secs: i64) {
    let mut n = 0;
    let events: Vec<Vec<u8>> = proof_e2e::delimited_records(from)
        .into_iter()
        .map(|b| {
            let mut ev = BuildEvent::decode(b.as_slice()).unwrap();
            if let Some(build_event::Payload::Finished(f)) = ev.payload.as_mut() {
                if let Some(t) = f.finish_time.as_mut() {
                    t.seconds += secs;
                }
                if f.finish_time_millis != 0 {
                    f.finish_time_millis += secs * 1000;
                }
                n += 1;
            }
            ev.encode_to_vec()
        })
        .collect();
    assert_eq!(n, 1, "one BuildFinished");
    write_delimited(to, &events);
}

fn write_delimited(path: &Path, records: &[Vec<u8>]) {
    let mut buf = Vec::new();
    for r in records {
        proof_stream::delimited::encode_varint(r.len() as u64, &mut buf);
        buf.extend_from_slice(r);
    }
    std::fs::write(path, buf).unwrap();
}

fn exec_log_check(report: &serde_json::Value) -> &serde_json::Value {
    let c = &report["evidence"]["output_binding"]["exec_log_check"];
    assert!(
        c.is_object(),
        "no exec_log_check: {}",
        report["evidence"]["output_binding"]
    );
    c
}

#[test]
fn the_execution_log_and_the_executor_name_the_same_spawns() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let x = fresh_uuid();

    // The real remote build and test of the spoke under X, every action
    // executed, its execution log kept (--config=proof writes it).
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let bep = tmp.path().join("real.bep");
    let out = rig.bazel(
        &ws,
        &[
            "test",
            "--config=proof",
            "//...",
            "--bes_backend=",
            &format!("--invocation_id={x}"),
            "--noremote_accept_cached",
            &action_nonce("EXECLOG"),
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    rig.shutdown(&ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    let log = ws.join("bazel-proof-execlog.bin");
    let spawns = read_log(&log);
    let remote = spawns.iter().filter(|s| s.runner == "remote").count();
    assert_eq!(remote, 10, "the spoke's test build runs 10 remote spawns");
    assert!(
        spawns.iter().all(|s| s.digest.is_none()),
        "Bazel 4.2.3 logs no action digest"
    );

    // 1. The real log: every remote spawn matched by its outputs.
    let art = record(
        &rig.remote_executor,
        &key,
        &bep,
        &log,
        &tmp.path().join("p1"),
    );
    let (code, checks, report) = verify_json(&public, &art, &[]);
    let (ok, detail) = verify_check(&checks, "sources_agree");
    println!("real log: sources_agree: {detail}");
    assert!(ok, "{detail}");
    assert_eq!(code, 0, "{checks}");
    let c = exec_log_check(&report);
    assert_eq!(c["key"], "outputs", "{c}");
    assert_eq!(c["remote_spawns"], 10, "{c}");
    assert_eq!(c["matched"], 10, "{c}");
    assert_eq!(c["executed_operations"], 10, "{c}");
    assert_eq!(c["unmatched_spawns"], 0, "{c}");
    assert_eq!(c["unlogged_operations"], 0, "{c}");
    assert!(detail.contains("the execution log"), "{detail}");
    let ops = ledger_operations(&art, tmp.path());
    assert_eq!(ops.len(), 10, "{ops:?}");

    // 2. One spawn's output digest changed: that spawn is unmatched, and
    // the operation that produced hello.txt is not in the log.
    let mut forged = spawns.clone();
    let s = forged
        .iter_mut()
        .find(|s| s.listed_outputs.iter().any(|o| o.ends_with("/hello.txt")))
        .unwrap();
    s.actual_outputs[0].digest.as_mut().unwrap().hash =
        hex::encode(sha2::Sha256::digest(b"forged\n"));
    let forged_log = tmp.path().join("forged.log");
    write_log(&forged_log, &forged);
    let art2 = record(
        &rig.remote_executor,
        &key,
        &bep,
        &forged_log,
        &tmp.path().join("p2"),
    );
    let (code, checks, report) = verify_json(&public, &art2, &[]);
    let (ok, detail) = verify_check(&checks, "sources_agree");
    println!("forged digest: sources_agree: {detail}");
    assert!(!ok);
    assert_eq!(code, 1, "{checks}");
    assert!(verify_check(&checks, "rederived").0, "{checks}");
    let hello_op = ops
        .iter()
        .find(|(_, _, paths)| paths.iter().any(|p| p.ends_with("/hello.txt")))
        .unwrap();
    assert!(
        detail.contains("Genrule") && detail.contains("bazel-out/k8-fastbuild/bin/hello.txt"),
        "{detail}"
    );
    assert!(
        detail.contains(&hello_op.0),
        "operation {} not named: {detail}",
        hello_op.0
    );
    let c = exec_log_check(&report);
    assert_eq!(
        (c["matched"].as_u64(), c["unmatched_spawns"].as_u64()),
        (Some(9), Some(1)),
        "{c}"
    );
    assert_eq!(c["unlogged_operations"], 1, "{c}");

    // 3. Key (a): each spawn given the action digest the executor reported
    // for the operation that produced its outputs (the TestRunner spawn
    // without outputs: the operation without output files).
    let mut with_digests = spawns.clone();
    for s in with_digests.iter_mut().filter(|s| s.runner == "remote") {
        let paths: Vec<String> = s.actual_outputs.iter().map(|f| f.path.clone()).collect();
        let op = ops
            .iter()
            .find(|(_, _, p)| *p == paths)
            .unwrap_or_else(|| panic!("no operation with outputs {paths:?}"));
        s.digest = Some(op.1.clone());
        // The digest alone decides: outputs are ignored under key (a).
        s.actual_outputs.clear();
    }
    let digest_log = tmp.path().join("digests.log");
    write_log(&digest_log, &with_digests);
    let art3 = record(
        &rig.remote_executor,
        &key,
        &bep,
        &digest_log,
        &tmp.path().join("p3"),
    );
    let (code, checks, report) = verify_json(&public, &art3, &[]);
    let (ok, detail) = verify_check(&checks, "sources_agree");
    assert!(ok, "{detail}");
    assert_eq!(code, 0, "{checks}");
    let c = exec_log_check(&report);
    assert_eq!(
        (c["key"].as_str(), c["matched"].as_u64()),
        (Some("action_digest"), Some(10)),
        "{c}"
    );
    let s = with_digests
        .iter_mut()
        .find(|s| s.listed_outputs.iter().any(|o| o.ends_with("/upper.txt")))
        .unwrap();
    let real_digest = s.digest.as_ref().unwrap().hash.clone();
    s.digest.as_mut().unwrap().hash = hex::encode(sha2::Sha256::digest(b"another action"));
    write_log(&digest_log, &with_digests);
    let art4 = record(
        &rig.remote_executor,
        &key,
        &bep,
        &digest_log,
        &tmp.path().join("p4"),
    );
    let (code, checks, _) = verify_json(&public, &art4, &[]);
    let (ok, detail) = verify_check(&checks, "sources_agree");
    println!("forged action digest: sources_agree: {detail}");
    assert!(!ok);
    assert_eq!(code, 1, "{checks}");
    assert!(
        detail.contains(&real_digest) && detail.contains("upper.txt"),
        "{detail}"
    );

    // 4. The decoys: 12 genrules executed remotely under X right after the
    // build, inside its window (BuildFinished + 60 s slack): 6 on the
    // build's instance "", 6 on the rig's other instance "main".
    let decoy = tmp.path().join("decoy");
    rig.spoke(&decoy);
    let rules: String = ["a", "b"]
        .iter()
        .flat_map(|k| (0..6).map(move |i| (k, i)))
        .map(|(k, i)| {
            format!("genrule(name = \"decoy{k}{i}\", outs = [\"decoy{k}{i}.txt\"], cmd = \"echo decoy {k} {i} {x} > $@\")\n")
        })
        .collect();
    std::fs::write(decoy.join("BUILD.bazel"), rules).unwrap();
    for (k, instance) in [("a", ""), ("b", "main")] {
        let targets: Vec<String> = (0..6).map(|i| format!("//:decoy{k}{i}")).collect();
        let mut args = vec![
            "build".to_string(),
            format!("--invocation_id={x}"),
            format!("--remote_executor={}", rig.remote_executor),
            format!("--remote_instance_name={instance}"),
            "--spawn_strategy=remote".into(),
            "--remote_local_fallback=false".into(),
            "--noremote_accept_cached".into(),
            format!("--remote_default_exec_properties=container-image={IMAGE}"),
            format!(
                "--execution_log_binary_file={}",
                tmp.path().join(format!("decoy-{k}.log")).display()
            ),
        ];
        args.extend(targets);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rig.bazel(&decoy, &args);
        assert_eq!(out.code, 0, "decoy build failed:\n{}", out.output);
        assert!(out.output.contains("6 remote"), "{}", out.output);
    }
    rig.shutdown(&decoy);
    // Offline, the window is the client's own BuildStarted/BuildFinished
    // stamps: the stream here claims it finished 10 minutes later, so the
    // decoys lie inside the window however long the steps above took (on
    // a loaded machine they can take more than the 60 s slack).
    let wide = tmp.path().join("wide.bep");
    widen(&bep, &wide, 600);
    let art5 = record(
        &rig.remote_executor,
        &key,
        &wide,
        &log,
        &tmp.path().join("p5"),
    );
    let (code, checks, report) = verify_json(&public, &art5, &[]);
    let (ok, detail) = verify_check(&checks, "sources_agree");
    println!("decoys: sources_agree: {detail}");
    assert!(!ok);
    assert_eq!(code, 1, "{checks}");
    assert!(verify_check(&checks, "rederived").0, "{checks}");
    let c = exec_log_check(&report);
    assert_eq!(c["matched"], 10, "{c}");
    assert_eq!(c["unlogged_operations"], 12, "{c}");
    // The ledger asked only the build's instance ""; BuildGrid 0.4.4 pools
    // "" and "main" and lists the "main" decoy's operations under "" too,
    // named "/UUID" like the build's own: nothing in an operation names the
    // instance it was submitted on (docs/proof-format.md §7). The log
    // cross-check names them all the same.
    let decoy_ops: Vec<(String, Vec<String>)> = ledger_operations(&art5, &tmp.path().join("u5"))
        .into_iter()
        .filter(|(_, _, p)| p.iter().any(|p| p.contains("/decoy")))
        .map(|(n, _, p)| (n, p))
        .collect();
    assert_eq!(decoy_ops.len(), 12);
    let on_main = decoy_ops
        .iter()
        .filter(|(_, p)| p.iter().any(|p| p.contains("/decoyb")))
        .count();
    assert_eq!(on_main, 6, "{decoy_ops:?}");
    for (n, _) in &decoy_ops {
        assert!(
            c["unlogged"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["operation"] == n.as_str()),
            "{n} not named: {c}"
        );
    }
    assert!(
        detail.contains("not a spawn the execution log names"),
        "{detail}"
    );

    // The cheapest forgery that passes the cross-check: the decoys' own
    // execution logs appended to the build's (both are the client's files).
    // The log then names every operation; what the BEP claims is held
    // against the log only one way (the BEP may claim fewer), and
    // outputs_bound still needs every claimed output bound.
    let mut joined = spawns.clone();
    for k in ["a", "b"] {
        joined.extend(read_log(&tmp.path().join(format!("decoy-{k}.log"))));
    }
    let joined_log = tmp.path().join("joined.log");
    write_log(&joined_log, &joined);
    let art6 = record(
        &rig.remote_executor,
        &key,
        &wide,
        &joined_log,
        &tmp.path().join("p6"),
    );
    let (_, checks, report6) = verify_json(&public, &art6, &[]);
    let (ok, detail) = verify_check(&checks, "sources_agree");
    println!("decoy logs appended: sources_agree: {detail}");
    assert!(ok, "{detail}");
    let c6 = exec_log_check(&report6);
    assert_eq!(
        (c6["matched"].as_u64(), c6["unlogged_operations"].as_u64()),
        (Some(22), Some(0)),
        "{c6}"
    );

    assert_eq!(
        report["evidence"]["attestation"]["instance_names"],
        serde_json::json!([""])
    );
}
