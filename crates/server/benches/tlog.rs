//! What the transparency log adds to the server's time from finalization
//! to the proof being written. Plain `main`, one table:
//!
//! The real Bazel 4.2.3 remote-build stream (tests/fixtures) is stored
//! under many fresh ids in an `FsStore`; each is then signed by
//! `ProofWriter::on_finalized` (what `proof serve` runs after
//! finalization: record the artifact, verify it, write its VSA), once by a
//! writer without the log and once by the same writer with it (append +
//! fsync of the leaf, a checkpoint signed, the inclusion sidecar and
//! STORE/tlog/checkpoint written and synced), alternating so drift hits
//! both. The log starts with `PROOF_BENCH_LOG_LEAVES` (100 000) leaves.
//! Prints the median and mean per proof of both, and the ratio.
//!
//! `cargo bench -p proof-server --bench tlog` (`-- --quick`, and under
//! `cargo test --all-targets`: 10 proofs each, 1,000 leaves). `PROOF_BENCH_DIR` picks the disk.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proof_ingest::Finalized;
use proof_proto::bep::{build_event, BuildEvent};
use proof_server::proofs::ProofWriter;
use proof_server::OnFinalized;
use proof_store::{FsStore, Store};
use prost::Message;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn stream(id: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3/remote-build/bep.bin");
    let bytes = std::fs::read(path).expect("the remote-build fixture");
    let mut out = Vec::new();
    for rec in proof_stream::delimited::split_delimited(&bytes, usize::MAX).expect("delimited") {
        let mut ev = BuildEvent::decode(rec).expect("a BuildEvent");
        if let Some(build_event::Payload::Started(s)) = ev.payload.as_mut() {
            s.uuid = id.to_string();
        }
        ev.encode_length_delimited(&mut out).expect("encode");
    }
    out
}

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = ms(v[v.len() / 2]);
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    (median, mean)
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: a quick run.
    let quick = std::env::args().any(|a| a == "--quick")
        || !std::env::args().any(|a| a == "--bench")
        || std::env::var("BENCH_QUICK").is_ok();
    let n: usize = if quick { 10 } else { 60 };
    let preload: u64 = std::env::var("PROOF_BENCH_LOG_LEAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1000 } else { 100_000 });
    let base = std::env::var_os("PROOF_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base).expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(&tmp.path().join("store")).expect("store"));
    let ids: Vec<String> = (0..2 * n)
        .map(|i| format!("00000000-0000-4000-8000-{i:012x}"))
        .collect();
    let finalized: Vec<Finalized> = ids
        .iter()
        .map(|id| {
            let (_, f) = proof_ingest::ingest_file(
                store.as_ref(),
                std::io::Cursor::new(stream(id)),
                0,
                |_| {},
            )
            .expect("ingest");
            assert!(f.complete && &f.invocation_id == id, "{f:?}");
            f
        })
        .collect();
    // A log that already holds `preload` proofs.
    let log_dir = tmp.path().join("store/tlog");
    std::fs::create_dir_all(&log_dir).unwrap();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(log_dir.join("leaves")).unwrap());
        for i in 0..preload {
            f.write_all(&proof_tlog::leaf_hash(&i.to_be_bytes()).0)
                .unwrap();
        }
    }
    let key = proof_artifact::SigningKey::from_bytes(&[9; 32]);
    let t = Instant::now();
    let log = proof_tlog::Published::open(&log_dir, "rbe-proof.bench/log", key.clone()).unwrap();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let writer = |dir: &str, log: Option<Arc<proof_tlog::Published>>| ProofWriter {
        key: key.clone(),
        dir: tmp.path().join(dir),
        executor: None,
        metrics: None,
        vsa: Some(proof_server::vsa::VsaConfig {
            verifier_id: "urn:rbe-proof:bench".into(),
            results_base: None,
        }),
        log,
    };
    std::fs::create_dir_all(tmp.path().join("without")).unwrap();
    std::fs::create_dir_all(tmp.path().join("with")).unwrap();
    let without = writer("without", None);
    let with = writer("with", Some(log));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, f) in finalized.iter().enumerate() {
        let id = &f.invocation_id;
        let (w, out) = if i % 2 == 0 {
            (&without, &mut a)
        } else {
            (&with, &mut b)
        };
        let t = Instant::now();
        w.on_finalized(store.as_ref(), f);
        out.push(t.elapsed());
        assert!(w.path(id).exists(), "no proof for {id}");
    }
    // The sidecars follow asynchronously (group commit): wait for them.
    let last = Instant::now();
    let logged = || {
        std::fs::read_dir(tmp.path().join("with"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tlog.json"))
            })
            .count()
    };
    while logged() < n {
        assert!(last.elapsed() < Duration::from_secs(30), "sidecars missing");
        std::thread::sleep(Duration::from_micros(200));
    }
    let sidecar_lag = last.elapsed().as_secs_f64() * 1e3;
    // The log's share alone: append (fsync of the leaf), inclusion proof,
    // checkpoint signed, checkpoint file written.
    let published = with.log.as_ref().expect("the logging writer has a log");
    let mut c = Vec::new();
    for i in 0..n {
        let statement = format!("{{\"bench\":{i},\"pad\":\"{}\"}}\n", "x".repeat(8000));
        let t = Instant::now();
        published
            .log_statement(statement.as_bytes())
            .expect("append");
        c.push(t.elapsed());
    }
    let (cm, ca) = stats(&mut c);
    let (am, aa) = stats(&mut a);
    let (bm, ba) = stats(&mut b);
    println!("finalization -> proof written (record + verify + VSA), real remote-build stream (81 events), {n} proofs each");
    println!("  log opened with {preload} leaves in {open_ms:.1} ms");
    println!("  {:<32} {:>10} {:>10}", "", "median ms", "mean ms");
    println!(
        "  {:<32} {am:>10.2} {aa:>10.2}",
        "without the log (baseline)"
    );
    println!("  {:<32} {bm:>10.2} {ba:>10.2}", "with the log");
    println!(
        "  {:<32} {cm:>10.2} {ca:>10.2}",
        "log_statement alone (sync)"
    );
    println!("  every sidecar written {sidecar_lag:.2} ms after the last proof");
    println!(
        "  ratio with/without: median {:.3} ({:+.1}%), mean {:.3} ({:+.1}%)",
        bm / am,
        (bm / am - 1.0) * 100.0,
        ba / aa,
        (ba / aa - 1.0) * 100.0
    );
}
