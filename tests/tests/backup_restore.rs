//! Backups that are restored and served again (docs/operations.md, "Backup and restore"):
//!
//! - the file store: `proof backup DEST` beside a running `proof serve` while a stream is
//!   being written; a server started on DEST serves every complete invocation (`proof
//!   export` equals the stream sent), every proof copied re-verifies, and the stream that
//!   was open resumes and completes;
//! - PostgreSQL: `pg_dump` of a live store while streams are being written, restored with
//!   `pg_restore` into a new database; a replica on it serves the same, and the streams
//!   open at dump time resume.
//!
//! Needs PROOF_PG_URL and PostgreSQL's client programs (tests/rig/install-deps.sh,
//! tests/pg/start-pg.sh); fails, never skips, without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_e2e::pg::{replay_opts, Db, Replicas};
use proof_e2e::{
    bep_invocation_id, delimited_records, fixture, keypair, proof_bin, stored_events,
    synthetic_stream, Server,
};
use proof_server::replay::replay;
use proof_store::Store;

const SCENARIOS: [&str; 5] = [
    "remote-build",
    "remote-test",
    "remote-cache-hit",
    "local-only",
    "failing-build",
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// (id, events) of the five Bazel 4.2.3 fixture streams.
fn fixtures() -> Vec<(String, Vec<Bytes>)> {
    SCENARIOS
        .iter()
        .map(|s| {
            let bep = fixture(s, "bep.bin");
            let events = delimited_records(&bep)
                .into_iter()
                .map(Bytes::from)
                .collect();
            (bep_invocation_id(&bep), events)
        })
        .collect()
}

fn send_all(rt: &tokio::runtime::Runtime, target: &str, streams: &[(String, Vec<Bytes>)]) {
    for (id, events) in streams {
        rt.block_on(replay(events.clone(), &replay_opts(target, id)))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
}

fn wait_finalized(store: &dyn Store, id: &str) {
    let t = Instant::now();
    loop {
        if store.state(id).unwrap().is_some_and(|s| s.finalized) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{id} not finalized");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `proof export` of `id` equals `events`.
fn export_equals(store: &str, id: &str, events: &[Bytes]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.bep");
    let st = Command::new(proof_bin())
        .args(["export", id, "--store", store, "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "export {id}");
    let got = delimited_records(&out);
    assert_eq!(got.len(), events.len(), "{id}: event count");
    assert!(
        got.iter().zip(events).all(|(a, b)| a[..] == b[..]),
        "{id}: the export differs from the stream sent"
    );
}

/// Every proof in `restored` passes the integrity checks and has the verdict its original
/// in `original` had; returns how many.
fn proofs_reverify(original: &Path, restored: &Path, public: &Path) -> usize {
    let vk = proof_artifact::load_public_pem(&std::fs::read_to_string(public).unwrap()).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(restored).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".proof.tar") {
            continue;
        }
        let policy = proof_artifact::Policy::default();
        let r = proof_artifact::verify_path(&p, std::slice::from_ref(&vk), &policy).unwrap();
        for name in proof_artifact::INTEGRITY_CHECKS {
            let c = r.checks.iter().find(|c| c.name == name).unwrap();
            assert!(c.ok, "{}: {name}: {c:?}", p.display());
        }
        let orig = original.join(p.file_name().unwrap());
        let o = proof_artifact::verify_path(&orig, std::slice::from_ref(&vk), &policy).unwrap();
        assert_eq!(r.ok, o.ok, "{}", p.display());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(&orig).unwrap(),
            "{}: a different artifact",
            p.display()
        );
        n += 1;
    }
    n
}

#[test]
fn file_store_backup_beside_a_running_server_restores() {
    proof_bin();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let server = Server::start("127.0.0.1:0", &store_dir, &[]);
    let done = fixtures();
    send_all(&rt, &server.target(), &done);
    let reader = proof_store::FsStore::open_read_only(&store_dir).unwrap();
    for (id, _) in &done {
        wait_finalized(&reader, id);
    }
    // A long stream is being written while the backup runs.
    let open_id = "backup-open-6a1e44c2-0f7b-4a8e".to_string();
    let open_events = synthetic_stream(&open_id, 60_000);
    let upload = {
        let o = replay_opts(&server.target(), &open_id);
        let ev = open_events.clone();
        rt.spawn(async move { replay(ev, &o).await })
    };
    let t = Instant::now();
    while reader.state(&open_id).unwrap().map_or(0, |s| s.last_seq) < 2_000 {
        assert!(t.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let dest = tmp.path().join("backup");
    let out = Command::new(proof_bin())
        .args(["backup"])
        .arg(&dest)
        .args(["--store", store_dir.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("proof backup: {rep}");
    assert_eq!(rep["invocations"], 6, "{rep}");
    assert_eq!(rep["journals"], 6, "{rep}");
    assert_eq!(rep["key_files"], 2, "{rep}");
    rt.block_on(upload).unwrap().unwrap();
    wait_finalized(&reader, &open_id);
    drop(reader);
    drop(server);

    // What the copy holds of the open stream: a clean prefix, less than the whole.
    let copy = proof_store::FsStore::open(&dest).unwrap();
    assert!(
        copy.recovery_report().is_clean(),
        "{:?}",
        copy.recovery_report()
    );
    let at_backup = copy.state(&open_id).unwrap().unwrap();
    assert!(!at_backup.finalized);
    let prefix = stored_events(&copy, &open_id);
    assert_eq!(prefix.len() as u64, at_backup.last_seq);
    assert!(prefix.iter().zip(&open_events).all(|(a, b)| a[..] == b[..]));
    println!(
        "the backup holds {} of {} events of the stream open during it",
        prefix.len(),
        open_events.len()
    );
    assert!(
        prefix.len() < open_events.len(),
        "the stream ended before the backup"
    );
    drop(copy);

    // Serve the copy: exports, proofs, and the open stream resumes.
    let restored = Server::start("127.0.0.1:0", &dest, &[]);
    let spec = dest.to_str().unwrap();
    for (id, events) in &done {
        export_equals(spec, id, events);
    }
    let n = proofs_reverify(
        &store_dir.join("proofs"),
        &dest.join("proofs"),
        &dest.join("proof.pub"),
    );
    assert_eq!(
        n, 5,
        "a proof for each fixture stream (each stream is complete)"
    );
    let report = rt
        .block_on(replay(
            open_events.clone(),
            &replay_opts(&restored.target(), &open_id),
        ))
        .unwrap();
    assert!(report.events > 0);
    let reader = proof_store::FsStore::open_read_only(&dest).unwrap();
    wait_finalized(&reader, &open_id);
    assert!(reader.state(&open_id).unwrap().unwrap().complete);
    export_equals(spec, &open_id, &open_events);
}

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run tests/rig/install-deps.sh")
        .map(|e| e.unwrap().path().join("bin"))
        .collect();
    dirs.sort();
    let p = dirs.last().expect("a PostgreSQL version").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

#[test]
fn postgres_restore_drill_from_a_pg_dump_of_a_live_store() {
    proof_bin();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let proofs = tmp.path().join("proofs");
    let db = Db::fresh();
    let args = |proofs: &Path| -> Vec<String> {
        vec![
            "--key".into(),
            key.display().to_string(),
            "--proofs".into(),
            proofs.display().to_string(),
        ]
    };
    let a = args(&proofs);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let replicas = Replicas::start(1, &db.url, &a);
    let target = format!("grpc://{}", replicas.addrs[0]);
    let done = fixtures();
    send_all(&rt, &target, &done);
    let store = db.store();
    for (id, _) in &done {
        wait_finalized(&store, id);
    }
    // Two long streams are being written while pg_dump runs.
    let open: Vec<(String, Vec<Bytes>)> = (0..2)
        .map(|k| {
            let id = format!("drill-open-{k}-3b9f0d11-5e2c");
            let ev = synthetic_stream(&id, 40_000);
            (id, ev)
        })
        .collect();
    let uploads: Vec<_> = open
        .iter()
        .map(|(id, ev)| {
            let o = replay_opts(&target, id);
            let ev = ev.clone();
            rt.spawn(async move { replay(ev, &o).await })
        })
        .collect();
    let t = Instant::now();
    while open
        .iter()
        .any(|(id, _)| store.state(id).unwrap().map_or(0, |s| s.last_seq) < 2_000)
    {
        assert!(t.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let dump = tmp.path().join("store.dump");
    let t = Instant::now();
    let st = Command::new(pg_bin("pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&dump)
        .args(["-d", &db.url])
        .status()
        .unwrap();
    assert!(st.success(), "pg_dump failed");
    let dump_secs = t.elapsed().as_secs_f64();
    // The proofs directory is backed up after the dump (its files are immutable).
    for up in uploads {
        rt.block_on(up).unwrap().unwrap();
    }
    for (id, _) in &open {
        wait_finalized(&store, id);
    }
    let proofs_copy = tmp.path().join("proofs-restored");
    std::fs::create_dir(&proofs_copy).unwrap();
    for e in std::fs::read_dir(&proofs).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            std::fs::copy(&p, proofs_copy.join(p.file_name().unwrap())).unwrap();
        }
    }
    drop(replicas);

    // Restore into a new database.
    let admin = proof_e2e::pg::pg_url();
    let name = format!("t_restore_{}", std::process::id());
    proof_testkit::pg::drop_database(&admin, &name).unwrap();
    let restored_url = proof_testkit::pg::create_database(&admin, &name).unwrap();
    let t = Instant::now();
    let st = Command::new(pg_bin("pg_restore"))
        .args(["--no-owner", "-d", &restored_url])
        .arg(&dump)
        .status()
        .unwrap();
    assert!(st.success(), "pg_restore failed");
    let restore_secs = t.elapsed().as_secs_f64();
    let restored = proof_store_pg::PgStore::connect(&restored_url).unwrap();
    let a = args(&proofs_copy);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let replica = Replicas::start(1, &restored_url, &a);
    let target = format!("grpc://{}", replica.addrs[0]);
    for (id, events) in &done {
        let st = restored.state(id).unwrap().expect("in the dump");
        assert!(st.finalized);
        export_equals(&restored_url, id, events);
    }
    let n = proofs_reverify(&proofs, &proofs_copy, &public);
    assert!(n >= 5, "{n} proofs");
    // The streams open at dump time: a consistent prefix, then they resume and complete.
    for (id, events) in &open {
        let st = restored
            .state(id)
            .unwrap()
            .expect("the open stream is in the dump");
        let prefix = stored_events(&restored, id);
        assert_eq!(
            prefix.len() as u64,
            st.last_seq,
            "{id}: rows and frames agree"
        );
        assert!(prefix.iter().zip(events).all(|(a, b)| a[..] == b[..]));
        assert!(!st.finalized && prefix.len() < events.len(), "{id}: {st:?}");
        println!(
            "{id}: the dump holds {} of {} events",
            prefix.len(),
            events.len()
        );
        rt.block_on(replay(events.clone(), &replay_opts(&target, id)))
            .unwrap();
        wait_finalized(&restored, id);
        assert!(restored.state(id).unwrap().unwrap().complete);
        export_equals(&restored_url, id, events);
    }
    println!(
        "pg_dump of the live store: {dump_secs:.1}s, pg_restore: {restore_secs:.1}s, dump {} bytes",
        std::fs::metadata(&dump).unwrap().len()
    );
    drop(replica);
    drop(restored);
    drop(store);
    let _ = proof_testkit::pg::drop_database(&admin, &name);
}
