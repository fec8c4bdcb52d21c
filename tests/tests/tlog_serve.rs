//! The transparency log of `proof serve` (docs/proof-format.md §9), end to
//! end with the real Bazel 4.2.3 remote-build stream replayed under fresh
//! ids: every signed proof is a leaf (its inclusion sidecar passes `proof
//! verify --require-log`), a proof never logged fails that check with the
//! reason, `proof log inclusion --url` proves inclusion from the served
//! checkpoint and tiles, the log survives a SIGKILL and restart, and a log
//! rewritten on disk (one leaf changed; or truncated and regrown with other
//! proofs) is caught by `proof log monitor` and by `proof log consistency`
//! from an old checkpoint.

use std::path::Path;
use std::time::Duration;

use proof_e2e::{delimited_records, fixture, keypair, run_proof, wait_for_proof, Server};

fn id(n: u32, round: u32) -> String {
    format!("{:08x}-7106-4{round:03x}-8000-{n:012x}", std::process::id())
}

fn send(target: &str, id: &str) {
    let events = delimited_records(&fixture("remote-build", "bep.bin"));
    proof_e2e::replay_stream(target, id, proof_e2e::renamed(events, id));
}

fn wait_sidecar(proofs: &Path, id: &str) {
    let p = proofs.join(format!("{id}.tlog.json"));
    proof_e2e::wait_for_file(&p, 60);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn start(store: &Path, key: &Path, proofs: &Path) -> (Server, String) {
    let server = Server::start(
        "127.0.0.1:0",
        store,
        &[
            "--key",
            s(key),
            "--proofs",
            s(proofs),
            "--http",
            "127.0.0.1:0",
            "--log-origin",
            "rbe-proof.test/log",
        ],
    );
    let http = format!(
        "http://{}",
        server.printed("proof serve: HTTP on http://").trim()
    );
    (server, http)
}

#[test]
fn every_signed_proof_is_logged_and_a_rewritten_log_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let (store, proofs) = (tmp.path().join("store"), tmp.path().join("proofs"));
    let (mut server, http) = start(&store, &key, &proofs);
    let state = tmp.path().join("monitor.state");

    // 1. Five proofs, each with its inclusion sidecar.
    let ids: Vec<String> = (0..5).map(|n| id(n, 1)).collect();
    for i in &ids {
        send(&server.target(), i);
        wait_for_proof(&proofs, i);
        wait_sidecar(&proofs, i);
    }
    for (n, i) in ids.iter().enumerate() {
        let art = proofs.join(format!("{i}.proof.tar"));
        let side: serde_json::Value =
            serde_json::from_slice(&std::fs::read(proofs.join(format!("{i}.tlog.json"))).unwrap())
                .unwrap();
        assert_eq!(side["leaf_index"], n as u64, "{side}");
        assert_eq!(side["tree_size"], n as u64 + 1, "{side}");
        assert!(side["checkpoint"]
            .as_str()
            .unwrap()
            .starts_with("rbe-proof.test/log\n"));
        let (code, out) = run_proof(&["verify", s(&art), "--key", s(&public), "--require-log"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("pass logged"), "{out}");
    }
    // The monitor's first run remembers the head.
    let (code, out) = run_proof(&[
        "log",
        "monitor",
        "--url",
        &http,
        "--key",
        s(&public),
        "--state",
        s(&state),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("first run"), "{out}");

    // 2. Inclusion from the served checkpoint and tiles, as a monitor reads them.
    let first = proofs.join(format!("{}.proof.tar", ids[0]));
    let (code, out) = run_proof(&[
        "log",
        "inclusion",
        s(&first),
        "--url",
        &http,
        "--key",
        s(&public),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let inc: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!(inc["leaf_index"], 0);
    assert_eq!(inc["tree_size"], 5);
    assert_eq!(inc["hashes"].as_array().unwrap().len(), 3, "{inc}");
    // That output is a valid sidecar too (where the proof travels).
    let moved = tmp.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::copy(&first, moved.join(first.file_name().unwrap())).unwrap();
    std::fs::write(
        moved.join(format!("{}.tlog.json", ids[0])),
        serde_json::to_vec(&inc).unwrap(),
    )
    .unwrap();
    let (code, out) = run_proof(&[
        "verify",
        s(&moved.join(first.file_name().unwrap())),
        "--key",
        s(&public),
        "--require-log",
    ]);
    assert_eq!(code, 0, "{out}");
    // The same from the store directory.
    let (code, out) = run_proof(&[
        "log",
        "inclusion",
        s(&first),
        "--store",
        s(&store),
        "--key",
        s(&public),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"leaf_index\": 0"), "{out}");

    // 3. A proof signed with the same key but never logged.
    let off = tmp.path().join("offline");
    let (code, out) = run_proof(&[
        "record",
        s(&fixture("remote-test", "bep.bin")),
        "--key",
        s(&key),
        "--out",
        s(&off),
    ]);
    assert_eq!(code, 0, "{out}");
    let offline = std::fs::read_dir(&off)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (code, out) = run_proof(&["verify", s(&offline), "--key", s(&public), "--require-log"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL logged") && out.contains("never logged"),
        "{out}"
    );
    let (code, out) = run_proof(&[
        "log",
        "inclusion",
        s(&offline),
        "--url",
        &http,
        "--key",
        s(&public),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("never logged"), "{out}");
    // Another proof's sidecar does not make it logged.
    std::fs::copy(
        proofs.join(format!("{}.tlog.json", ids[1])),
        offline.with_file_name(
            offline
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".proof.tar", ".tlog.json"),
        ),
    )
    .unwrap();
    let (code, out) = run_proof(&["verify", s(&offline), "--key", s(&public), "--require-log"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not leaf 1"), "{out}");

    // 4. SIGKILL and restart: the log continues; the monitor sees growth.
    // A crash after the last proof was written but before its leaf reached
    // the disk: the leaf is gone, its sidecar too, its pending marker is
    // still there. At the next start it is logged (same statement, same
    // index) and its sidecar written.
    server.kill9();
    let leaves = store.join("tlog/leaves");
    let full = std::fs::read(&leaves).unwrap();
    std::fs::write(&leaves, &full[..4 * 32]).unwrap();
    let last_side = proofs.join(format!("{}.tlog.json", ids[4]));
    std::fs::remove_file(&last_side).unwrap();
    std::fs::write(proofs.join(".pending").join(&ids[4]), b"").unwrap();
    let (mut server, http) = start(&store, &key, &proofs);
    wait_sidecar(&proofs, &ids[4]);
    let side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&last_side).unwrap()).unwrap();
    assert_eq!(side["leaf_index"], 4, "{side}");
    assert_eq!(std::fs::read(&leaves).unwrap(), full, "the same leaf again");
    let t = std::time::Instant::now();
    while proofs.join(".pending").join(&ids[4]).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the marker stays after logging"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out) = run_proof(&[
        "verify",
        s(&proofs.join(format!("{}.proof.tar", ids[4]))),
        "--key",
        s(&public),
        "--require-log",
    ]);
    assert_eq!(code, 0, "{out}");
    let more: Vec<String> = (0..3).map(|n| id(n, 2)).collect();
    for i in &more {
        send(&server.target(), i);
        wait_sidecar(&proofs, i);
    }
    let side: serde_json::Value = serde_json::from_slice(
        &std::fs::read(proofs.join(format!("{}.tlog.json", more[2]))).unwrap(),
    )
    .unwrap();
    assert_eq!(side["leaf_index"], 7, "{side}");
    let (code, out) = run_proof(&[
        "log",
        "monitor",
        "--url",
        &http,
        "--key",
        s(&public),
        "--state",
        s(&state),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("grew from 5 to 8"), "{out}");
    let old = tmp.path().join("old.checkpoint");
    std::fs::copy(&state, &old).unwrap();

    // 5. One leaf rewritten on disk (leaf 2 replaced), then a restart.
    server.kill9();
    let honest = std::fs::read(&leaves).unwrap();
    let mut bytes = honest.clone();
    bytes[2 * 32..3 * 32].copy_from_slice(&[0x42; 32]);
    std::fs::write(&leaves, &bytes).unwrap();
    let (server, http) = start(&store, &key, &proofs);
    send(&server.target(), &id(9, 3));
    wait_sidecar(&proofs, &id(9, 3));
    let (code, out) = run_proof(&[
        "log",
        "monitor",
        "--url",
        &http,
        "--key",
        s(&public),
        "--state",
        s(&state),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FORK OR REWRITE"), "{out}");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        std::fs::read(&old).unwrap(),
        "state kept"
    );
    let (code, out) = run_proof(&[
        "log",
        "consistency",
        "--from",
        s(&old),
        "--url",
        &http,
        "--key",
        s(&public),
    ]);
    assert_eq!(code, 1, "{out}");
    drop(server);

    // 6. Truncated to 3 leaves, regrown past the old size with other proofs.
    std::fs::write(&leaves, &honest[..3 * 32]).unwrap();
    let (server, http) = start(&store, &key, &proofs);
    for n in 0..6 {
        let i = id(n, 4);
        send(&server.target(), &i);
        wait_sidecar(&proofs, &i);
    }
    let (code, out) = run_proof(&[
        "log",
        "consistency",
        "--from",
        s(&old),
        "--url",
        &http,
        "--key",
        s(&public),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FORK OR REWRITE"), "{out}");
    let (code, out) = run_proof(&[
        "log",
        "monitor",
        "--url",
        &http,
        "--key",
        s(&public),
        "--state",
        s(&state),
    ]);
    assert_eq!(code, 1, "{out}");
    drop(server);

    // 7. The honest log restored and grown: consistent again.
    std::fs::write(&leaves, &honest).unwrap();
    let (server, http) = start(&store, &key, &proofs);
    let i = id(1, 5);
    send(&server.target(), &i);
    wait_sidecar(&proofs, &i);
    let (code, out) = run_proof(&[
        "log",
        "consistency",
        "--from",
        s(&old),
        "--url",
        &http,
        "--key",
        s(&public),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("grew from 8 to 9"), "{out}");
    drop(server);
}
