//! Replicated `proof serve` on PostgreSQL beside the embedded store, measured in one run.
//!
//! Each setup gets the same load: STREAMS concurrent BES streams of EVENTS synthetic
//! events each, pushed with the replay client (Bazel's pipelining and ack rules) into
//! separate `proof serve` processes:
//!   - embedded x1: one replica on a store directory (the baseline);
//!   - pg x1:       one replica on PostgreSQL;
//!   - pg x3:       three replicas on one PostgreSQL database behind HAProxy (h2c).
//!
//! Printed: events/s (and the ratio to the embedded baseline) and the peak RSS of each
//! replica process (VmHWM).
//!
//! `cargo bench -p proof-e2e --bench replicas` runs the full size (16 streams of 20,000
//! events); `cargo test --all-targets` runs it small, as a smoke run. Needs PROOF_PG_URL
//! and haproxy (tests/run-all.sh provides both).

use std::time::{Duration, Instant};

use proof_e2e::pg::{replay_opts, Db, Haproxy, Replicas};
use proof_e2e::synthetic_stream;
use proof_server::replay::replay;

struct Size {
    streams: usize,
    events: usize,
}

struct Outcome {
    name: &'static str,
    events_per_s: f64,
    rss_kib: Vec<u64>,
}

fn run(name: &'static str, replicas: &Replicas, target: &str, size: &Size) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let streams: Vec<_> = (0..size.streams)
        .map(|k| {
            let id = format!(
                "bench-{}-{k}",
                name.split(" + ").next().unwrap().replace(" ", "-")
            );
            let events = synthetic_stream(&id, size.events);
            (id, events)
        })
        .collect();
    let t = Instant::now();
    let total: u64 = rt.block_on(async {
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|(id, events)| {
                let o = replay_opts(target, &id);
                tokio::spawn(async move { replay(events, &o).await })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            let report = tokio::time::timeout(Duration::from_secs(600), t)
                .await
                .expect("stream finished")
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            n += report.events;
        }
        n
    });
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(total, (size.streams * (size.events + 1)) as u64);
    let rss_kib = (0..replicas.servers.len())
        .filter_map(|i| replicas.peak_rss_kib(i))
        .collect();
    Outcome {
        name,
        events_per_s: (size.streams * size.events) as f64 / secs,
        rss_kib,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size {
            streams: 16,
            events: 20_000,
        }
    } else {
        Size {
            streams: 4,
            events: 2_000,
        }
    };
    proof_e2e::proof_bin();
    let mut out = Vec::new();

    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let embedded = Replicas::start(1, store_dir.to_str().unwrap(), &["--abandon-after", "0"]);
    let target = format!("grpc://{}", embedded.addrs[0]);
    out.push(run("embedded x1", &embedded, &target, &size));
    drop(embedded);

    let db = Db::fresh();
    let one = Replicas::start(1, &db.url, &["--abandon-after", "0"]);
    let target = format!("grpc://{}", one.addrs[0]);
    out.push(run("pg x1", &one, &target, &size));
    drop(one);

    let db3 = Db::fresh();
    let three = Replicas::start(3, &db3.url, &["--abandon-after", "0"]);
    let lb = Haproxy::start(&three.addrs);
    out.push(run("pg x3 + haproxy", &three, &lb.target(), &size));
    drop(lb);
    drop(three);

    let base = out[0].events_per_s;
    println!(
        "replicas bench ({}): {} streams x {} events, each setup in its own proof serve process(es)",
        if full { "full" } else { "smoke" },
        size.streams,
        size.events
    );
    for o in &out {
        println!(
            "  {:<16} {:>9.0} events/s  ({:.2}x embedded)  peak RSS per replica: {}",
            o.name,
            o.events_per_s,
            o.events_per_s / base,
            o.rss_kib
                .iter()
                .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
