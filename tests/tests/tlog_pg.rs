//! The transparency log of replicated `proof serve` on one PostgreSQL
//! store (docs/proof-format.md §9): two replicas sign proofs concurrently
//! (the real Bazel 4.2.3 remote-build stream replayed under fresh ids, to
//! both at once) and append them to one linear log: every leaf index from 0
//! to N-1 exactly once, no statement twice, every proof's sidecar verifies,
//! both replicas serve the same checkpoint, and an early checkpoint from
//! one replica is consistent with the other's final one. A rewritten row is
//! caught by consistency. Needs PROOF_PG_URL (tests/pg/start-pg.sh).

use std::path::Path;

use proof_e2e::pg::{Db, Replicas};
use proof_e2e::{delimited_records, fixture, keypair, run_proof, wait_for_file};

fn id(n: u32) -> String {
    format!("{:08x}-7107-4000-8000-{n:012x}", std::process::id())
}

fn send(target: &str, id: &str) {
    let events = delimited_records(&fixture("remote-build", "bep.bin"));
    proof_e2e::replay_stream(target, id, proof_e2e::renamed(events, id));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn two_replicas_append_concurrently_to_one_linear_log() {
    let db = Db::fresh();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let proofs = tmp.path().join("proofs");
    let replicas = Replicas::start(
        2,
        &db.url,
        &[
            "--key",
            s(&key),
            "--proofs",
            s(&proofs),
            "--http",
            "127.0.0.1:0",
            "--log-origin",
            "rbe-proof.test/pg-log",
        ],
    );
    let http: Vec<String> = replicas
        .servers
        .iter()
        .map(|r| {
            format!(
                "http://{}",
                r.as_ref()
                    .unwrap()
                    .printed("proof serve: HTTP on http://")
                    .trim()
            )
        })
        .collect();
    let targets: Vec<String> = replicas
        .servers
        .iter()
        .map(|r| r.as_ref().unwrap().target())
        .collect();

    // A first proof, and the checkpoint replica 0 serves after it.
    send(&targets[0], &id(1000));
    wait_for_file(&proofs.join(format!("{}.tlog.json", id(1000))), 60);
    let early = tmp.path().join("early.checkpoint");
    let (code, out) = run_proof(&[
        "log",
        "monitor",
        "--url",
        &http[0],
        "--key",
        s(&public),
        "--state",
        s(&early),
    ]);
    assert_eq!(code, 0, "{out}");

    // 2 x 8 streams at once, half to each replica.
    let n = 8;
    std::thread::scope(|sc| {
        for (r, target) in targets.iter().enumerate() {
            let target = target.clone();
            sc.spawn(move || {
                let hs: Vec<_> = (0..n)
                    .map(|k| {
                        let t = target.clone();
                        let i = id(r as u32 * 100 + k);
                        std::thread::spawn(move || send(&t, &i))
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
            });
        }
    });
    let all: Vec<String> = std::iter::once(id(1000))
        .chain((0..2).flat_map(|r| (0..n).map(move |k| id(r * 100 + k))))
        .collect();
    let mut indexes = Vec::new();
    for i in &all {
        let side = proofs.join(format!("{i}.tlog.json"));
        wait_for_file(&side, 60);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&side).unwrap()).unwrap();
        indexes.push(v["leaf_index"].as_u64().unwrap());
        let (code, out) = run_proof(&[
            "verify",
            s(&proofs.join(format!("{i}.proof.tar"))),
            "--key",
            s(&public),
            "--require-log",
        ]);
        assert_eq!(code, 0, "{out}");
    }
    indexes.sort();
    let want: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(indexes, want, "one linear log: every index once");

    // The table itself: N rows, indexes 0..N-1, no hash twice.
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT hash), min(idx), max(idx) FROM proof_tlog_leaves",
            &[],
        )
        .unwrap();
    let (rows, distinct, lo, hi): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (rows, distinct, lo, hi),
        (all.len() as i64, all.len() as i64, 0, all.len() as i64 - 1)
    );

    // Both replicas serve the same head, consistent with the early one.
    let mut heads = Vec::new();
    for h in &http {
        let (code, out) = run_proof(&[
            "log",
            "consistency",
            "--from",
            s(&early),
            "--url",
            h,
            "--key",
            s(&public),
            "--json",
        ]);
        assert_eq!(code, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
        assert_eq!(v["tree_size"], all.len() as u64, "{v}");
        heads.push(v["root_hash"].clone());
    }
    assert_eq!(heads[0], heads[1]);

    // A row rewritten in the database is caught by consistency from the
    // early checkpoint.
    c.execute(
        "UPDATE proof_tlog_leaves SET hash = $1 WHERE idx = 0",
        &[&vec![0x42u8; 32]],
    )
    .unwrap();
    // (A running replica keeps the leaves it has read in memory and reads
    // only new rows; one started now reads the rewritten row.)
    drop(replicas);
    let fresh = Replicas::start(
        1,
        &db.url,
        &[
            "--key",
            s(&key),
            "--proofs",
            s(&proofs),
            "--http",
            "127.0.0.1:0",
            "--log-origin",
            "rbe-proof.test/pg-log",
        ],
    );
    let h = format!(
        "http://{}",
        fresh.servers[0]
            .as_ref()
            .unwrap()
            .printed("proof serve: HTTP on http://")
            .trim()
    );
    let (code, out) = run_proof(&[
        "log",
        "consistency",
        "--from",
        s(&early),
        "--url",
        &h,
        "--key",
        s(&public),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FORK OR REWRITE"), "{out}");
}
