//! Append / read-back throughput of FsStore. Plain `main`; run with
//! `cargo bench -p proof-store --bench append` (set PROOF_STORE_BENCH_DIR to pick the disk).

use std::time::Instant;

use bytes::Bytes;
use proof_store::{AppendFlags, FsStore, InvocationMeta, InvocationSource, JournalRecord, Store};

fn payload(seq: u64) -> Bytes {
    // Roughly BEP-like: protobuf-ish labels and paths, partly repetitive, ~300 bytes.
    let mut s = format!(
        "\n\x1c\x12\x1a//services/pkg{}/lib:target_{}\x1a\x0c\x02bazel-out/k8-fastbuild/bin/services/pkg{}/libtarget_{}.a sha256:{:016x}{:016x} ",
        seq % 97,
        seq,
        seq % 97,
        seq,
        seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        seq.rotate_left(17) ^ 0xDEAD_BEEF
    );
    while s.len() < 300 {
        s.push_str("action_output_file ");
    }
    s.truncate(300);
    Bytes::from(s)
}

fn meta(id: &str) -> InvocationMeta {
    InvocationMeta {
        invocation_id: id.into(),
        build_id: None,
        source: InvocationSource::Bes,
        tenant: None,
        instance: None,
        created_at_ms: 0,
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn run(store: &FsStore, id: &str, total: u64, batch: u64) {
    store.open_invocation(&meta(id)).unwrap();
    let start = Instant::now();
    let mut seq = 1;
    let mut buf = Vec::with_capacity(batch as usize);
    while seq <= total {
        buf.clear();
        let n = batch.min(total - seq + 1);
        buf.extend((seq..seq + n).map(|s| JournalRecord::bep_event(s, payload(s))));
        store.append(id, &buf, AppendFlags::default()).unwrap();
        seq += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let st = store.state(id).unwrap().unwrap();
    println!(
        "append batch={batch:>4}: {total:>8} records in {secs:7.2} s = {:>9.0} events/s, {:>7.0} fsyncs/s, {:6.1} MB payload/s, journal {:.1} MB (ratio {:.2}), peak RSS {:.0} MiB",
        total as f64 / secs,
        (total as f64 / batch as f64) / secs,
        st.bytes as f64 / secs / 1e6,
        st.journal_bytes as f64 / 1e6,
        st.journal_bytes as f64 / st.bytes as f64,
        peak_rss_mib()
    );
}

fn main() {
    let base = std::env::var_os("PROOF_STORE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    println!("store dir: {}", dir.path().display());
    let store = FsStore::open(dir.path()).unwrap();
    // `cargo test --all-targets` runs this without `--bench`: a smoke run.
    let quick = std::env::var_os("PROOF_STORE_BENCH_QUICK").is_some()
        || !std::env::args().any(|a| a == "--bench");
    let big = if quick { 100_000 } else { 1_000_000 };
    run(&store, "batch-1", if quick { 1_000 } else { 5_000 }, 1);
    run(&store, "batch-64", big, 64);
    run(&store, "batch-512", big, 512);

    let start = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0u64;
    for r in store.read("batch-512").unwrap() {
        let r = r.unwrap();
        n += 1;
        bytes += r.payload.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "read back: {n} records in {secs:.2} s = {:.0} records/s, {:.1} MB payload/s, peak RSS {:.0} MiB",
        n as f64 / secs,
        bytes as f64 / secs / 1e6,
        peak_rss_mib()
    );
    drop(store);
    let start = Instant::now();
    let store = FsStore::open(dir.path()).unwrap();
    println!(
        "reopen with recovery scan of 3 unfinalized journals ({} records): {:.2} s, clean: {}",
        store.state("batch-512").unwrap().unwrap().last_seq * 2 + if quick { 1_000 } else { 5_000 },
        start.elapsed().as_secs_f64(),
        store.recovery_report().is_clean()
    );
}
