//! `proof gc` (retention) on both stores, through the real binary: what it removes, what it
//! keeps (open streams, the manifest's proofs), tombstones in `list`/`show`/`export`, and a
//! `kill -9` in the middle of a gc run on PostgreSQL.
//!
//! The PostgreSQL tests need `PROOF_PG_URL` (tests/pg/start-pg.sh; tests/run-all.sh sets
//! it) and fail without it.

use proof_testkit::pg::{create_database, drop_database, pg_url};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use proof_store::{
    AppendFlags, FsStore, InvocationMeta, InvocationSource, JournalRecord, Store, StoreError,
};
use serde_json::Value;

const SCENARIOS: [&str; 5] = [
    "remote-build",
    "remote-test",
    "remote-cache-hit",
    "local-only",
    "failing-build",
];

fn fixture(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
        .join("bep.bin")
}

fn proof(args: &[&str]) -> Output {
    Command::new(assert_cmd::cargo::cargo_bin("proof"))
        .args(args)
        .env("PROOF_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = proof(args);
    assert!(
        o.status.success(),
        "proof {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// A fresh database, dropped at the end.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn new(tag: &str) -> Self {
        let admin = pg_url();
        let name = format!("t_gc_{tag}_{}", std::process::id());
        drop_database(&admin, &name).unwrap();
        let url = create_database(&admin, &name).unwrap();
        PgDb { admin, name, url }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = drop_database(&self.admin, &self.name);
    }
}

/// The BEP events of a fixture stream (varint-delimited).
fn events(file: &Path) -> Vec<Bytes> {
    let data = std::fs::read(file).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = data[pos];
            pos += 1;
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        out.push(Bytes::copy_from_slice(&data[pos..pos + len]));
        pos += len;
    }
    out
}

/// An invocation received long ago whose stream never finished (not finalized).
fn add_open_invocation(store: &dyn Store, id: &str) {
    let meta = InvocationMeta {
        invocation_id: id.into(),
        build_id: None,
        source: InvocationSource::Bes,
        tenant: None,
        instance: None,
        created_at_ms: 1_000,
    };
    let evs = events(&fixture("remote-build"));
    store
        .append_as(
            &meta,
            &JournalRecord::bep_events(evs[..10].to_vec()),
            AppendFlags::default(),
        )
        .unwrap();
}

/// The example manifest with one class's proof naming `id`.
fn manifest_keeping(dir: &Path, id: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/platform/config/rbe-target-eligibility.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    m["classes"]["checkout-web/build"]["proofs"][0]["invocation_id"] = Value::from(id);
    let out = dir.join("manifest.json");
    std::fs::write(&out, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    out
}

/// The whole retention story on one store (`spec`: a directory or a URL);
/// `open` opens it directly (the CLI must not be running then).
fn gc_story(spec: &str, open: &dyn Fn() -> Arc<dyn Store>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for s in SCENARIOS {
        let v = json(&[
            "ingest",
            fixture(s).to_str().unwrap(),
            "--store",
            spec,
            "--json",
        ]);
        ids.push(v["invocation_id"].as_str().unwrap().to_string());
    }
    let (sizes, before) = {
        let store = open();
        add_open_invocation(store.as_ref(), "still-open");
        let sizes: Vec<u64> = ids
            .iter()
            .map(|id| store.get(id).unwrap().unwrap().state.journal_bytes)
            .collect();
        (sizes, store.get(&ids[1]).unwrap().unwrap())
    };
    assert!(sizes.iter().all(|&n| n > 0));

    // A dry run counts and removes nothing.
    let dry = json(&[
        "gc",
        "--store",
        spec,
        "--older-than",
        "0s",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["removed"], 5, "{dry}");
    assert_eq!(dry["kept_open"], 1, "{dry}");
    assert_eq!(dry["freed_bytes"], sizes.iter().sum::<u64>(), "{dry}");
    let out = tmp.path().join("0.bep");
    ok(&[
        "export",
        &ids[0],
        "--store",
        spec,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fixture(SCENARIOS[0])).unwrap()
    );
    // Only the open one (received in 1970) is that old, and it is kept.
    let none = json(&["gc", "--store", spec, "--older-than", "1000d", "--json"]);
    assert_eq!(none["examined"], 1, "{none}");
    assert_eq!(none["kept_open"], 1, "{none}");
    assert_eq!(none["removed"], 0, "{none}");

    // For real, keeping the manifest's proof.
    let manifest = manifest_keeping(tmp.path(), &ids[0]);
    let o = proof(&[
        "gc",
        "--store",
        spec,
        "--older-than",
        "0s",
        "--keep-manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("proof: gc: 6 examined, 4 removed"),
        "{stderr}"
    );
    let freed: u64 = sizes[1..].iter().sum();
    assert!(
        stdout.contains(&format!("4 of 6 invocations older than 0s removed, {freed} bytes freed; kept 1 open/unfinalized, 1 in the manifest")),
        "{stdout}"
    );

    // Tombstones in list and show; the kept ones are whole.
    let list = ok(&["list", "--store", spec]);
    assert_eq!(
        list.matches("(journal removed by retention)").count(),
        4,
        "{list}"
    );
    for line in list.lines() {
        let removed = line.contains("(journal removed by retention)");
        let kept = line.starts_with(&ids[0]) || line.starts_with("still-open");
        assert_eq!(removed, !kept, "{line}");
    }
    let show = json(&["show", &ids[1], "--store", spec, "--json"]);
    assert_eq!(show["journal"], "journal removed by retention", "{show}");
    assert_eq!(show["journal_freed_bytes"], sizes[1]);
    assert_eq!(show["complete"], before.state.complete);
    assert_eq!(
        show["stream_sha256"],
        before.summary.as_ref().unwrap()["stream_sha256"]
    );
    assert!(show["stream_sha256"].is_string());
    let text = ok(&["show", &ids[1], "--store", spec]);
    assert!(text.contains("journal removed by retention"), "{text}");
    let e = proof(&[
        "export",
        &ids[1],
        "--store",
        spec,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!e.status.success());
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("removed by retention"), "{msg}");
    ok(&[
        "export",
        &ids[0],
        "--store",
        spec,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fixture(SCENARIOS[0])).unwrap()
    );
    {
        let store = open();
        assert_eq!(store.read("still-open").unwrap().count(), 10);
        assert!(!store.get("still-open").unwrap().unwrap().state.finalized);
        for id in &ids[1..] {
            assert!(matches!(
                store.read(id),
                Err(StoreError::JournalRemoved { .. })
            ));
        }
    }

    // Again with the manifest: nothing left to do.
    let m = manifest.to_str().unwrap();
    let again = json(&[
        "gc",
        "--store",
        spec,
        "--older-than",
        "0s",
        "--keep-manifest",
        m,
        "--json",
    ]);
    assert_eq!(again["removed"], 0, "{again}");
    assert_eq!(again["already_removed"], 4, "{again}");
    assert_eq!(again["kept_manifest"], 1, "{again}");
    assert_eq!(again["freed_bytes"], 0, "{again}");
    // Without it, the manifest's invocation goes too.
    let last = json(&["gc", "--store", spec, "--older-than", "0s", "--json"]);
    assert_eq!(last["removed_ids"], serde_json::json!([ids[0]]), "{last}");
}

#[test]
fn gc_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let spec = store_dir.to_str().unwrap().to_string();
    let d = store_dir.clone();
    gc_story(&spec, &move || {
        Arc::new(FsStore::open(&d).unwrap()) as Arc<dyn Store>
    });
    // The journal files are gone from disk.
    let n = walk(&store_dir.join("journals"));
    assert_eq!(n, 1, "only the open journal stays");
}

fn walk(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += walk(&p);
        } else if p.extension().is_some_and(|x| x == "journal") {
            n += 1;
        }
    }
    n
}

#[test]
fn gc_on_postgresql() {
    let db = PgDb::new("story");
    let url = db.url.clone();
    gc_story(&db.url, &move || {
        Arc::new(proof_store_pg::PgStore::connect(&url).unwrap()) as Arc<dyn Store>
    });
}

/// `kill -9` of `proof gc` at random moments: every invocation either reads whole (every
/// event, byte for byte) or is a tombstone; never one with frames missing.
#[test]
fn gc_killed_mid_run_on_postgresql_leaves_whole_journals_or_tombstones() {
    let db = PgDb::new("kill");
    let store = proof_store_pg::PgStore::connect(&db.url).unwrap();
    let evs = events(&fixture("remote-test"));
    const N: usize = 300;
    for k in 0..N {
        let meta = InvocationMeta {
            invocation_id: format!("inv-{k:04}"),
            build_id: None,
            source: InvocationSource::File,
            tenant: None,
            instance: None,
            created_at_ms: 10_000 + k as i64,
        };
        // A few frames each.
        for (i, chunk) in evs.chunks(40).enumerate() {
            let recs: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(j, e)| JournalRecord::bep_event((i * 40 + j + 1) as u64, e.clone()))
                .collect();
            store
                .append_as(&meta, &recs, AppendFlags::default())
                .unwrap();
        }
        store
            .mark_complete(&meta.invocation_id, true, None, &serde_json::json!({}))
            .unwrap();
    }
    let check = |store: &dyn Store| -> (usize, usize) {
        let (mut whole, mut tombs) = (0, 0);
        for k in 0..N {
            let id = format!("inv-{k:04}");
            let rec = store.get(&id).unwrap().unwrap();
            match store.read(&id) {
                Err(StoreError::JournalRemoved { .. }) => {
                    assert!(rec.journal_removed.is_some(), "{id}");
                    assert!(rec.state.finalized && rec.state.complete, "{id}");
                    tombs += 1;
                }
                Err(e) => panic!("{id}: {e}"),
                Ok(it) => {
                    assert!(rec.journal_removed.is_none(), "{id}");
                    let got: Vec<Bytes> = it.map(|r| r.unwrap().payload).collect();
                    assert_eq!(got, evs, "{id}: a journal with events missing");
                    whole += 1;
                }
            }
        }
        (whole, tombs)
    };
    let mut seen_partial = 0;
    let mut last_tombs = 0;
    for round in 0..6 {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("proof"))
            .args(["gc", "--store", &db.url, "--older-than", "0s"])
            .env("PROOF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // gc goes newest first: wait until it has removed the next journal, then kill it a
        // few milliseconds later, in the middle of its run (and of some transaction).
        let next = format!("inv-{:04}", N - 1 - last_tombs);
        let t0 = std::time::Instant::now();
        while store.get(&next).unwrap().unwrap().journal_removed.is_none() {
            assert!(t0.elapsed().as_secs() < 60, "gc removed nothing in 60 s");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let wait = (round as u64 * 7) % 30;
        std::thread::sleep(std::time::Duration::from_millis(wait));
        // SIGKILL (std's `kill` on Unix).
        let _ = child.kill();
        let status = child.wait().unwrap();
        let (whole, tombs) = check(&store);
        eprintln!(
            "round {round}: killed after {wait} ms ({status}): {whole} whole, {tombs} tombstones"
        );
        assert_eq!(whole + tombs, N);
        assert!(tombs >= last_tombs, "a tombstone went away");
        last_tombs = tombs;
        if whole > 0 && tombs > 0 {
            seen_partial += 1;
        }
        if whole == 0 {
            break;
        }
    }
    assert!(seen_partial > 0, "no kill landed in the middle of a gc run");
    // A full run finishes the job.
    let t = std::time::Instant::now();
    let v = json(&["gc", "--store", &db.url, "--older-than", "0s", "--json"]);
    println!(
        "the last run removed {} journals ({} bytes) in {:?}",
        v["removed"],
        v["freed_bytes"],
        t.elapsed()
    );
    assert_eq!(
        v["already_removed"].as_u64().unwrap() + v["removed"].as_u64().unwrap(),
        N as u64
    );
    assert_eq!(check(&store), (0, N));
}

/// `proof serve --retention`: the server removes old finalized journals by itself while
/// it runs (seen by a reader beside it), keeps the manifest's and the open ones.
#[test]
fn serve_with_retention_removes_old_journals_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let spec = store_dir.to_str().unwrap();
    let mut ids = Vec::new();
    for s in &SCENARIOS[..3] {
        let v = json(&[
            "ingest",
            fixture(s).to_str().unwrap(),
            "--store",
            spec,
            "--json",
        ]);
        ids.push(v["invocation_id"].as_str().unwrap().to_string());
    }
    {
        let store = FsStore::open(&store_dir).unwrap();
        add_open_invocation(&store, "still-open");
    }
    let manifest = manifest_keeping(dir.path(), &ids[0]);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        Command::new(assert_cmd::cargo::cargo_bin("proof"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                spec,
                "--retention",
                "0s",
                "--retention-interval",
                "1s",
                "--retention-keep-manifest",
                manifest.to_str().unwrap(),
            ])
            .env("PROOF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = std::time::Instant::now();
    loop {
        let list = ok(&["list", "--store", spec]);
        if list.matches("(journal removed by retention)").count() == 2 {
            for line in list.lines() {
                let kept = line.starts_with(&ids[0]) || line.starts_with("still-open");
                assert_eq!(
                    line.contains("(journal removed by retention)"),
                    !kept,
                    "{line}"
                );
            }
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 30,
            "the server removed nothing in 30 s: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
