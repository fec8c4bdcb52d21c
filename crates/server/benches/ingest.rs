//! Ingest benchmark of the BES backend. Plain `main`, one table:
//!
//! - events/s over loopback gRPC, one stream and 32 concurrent streams
//!   (in-process server, a lean pipelined Bazel-like client: one RPC per
//!   invocation, every event sent without waiting, acks checked in order);
//! - events/s of `proof_ingest::ingest_file` on a generated bep.bin;
//! - memory of a server process (this binary re-executed as a child running
//!   the same `serve_grpc` + `FsStore` as `proof serve`) while one
//!   1,000,000-event stream goes through it: VmRSS / VmHWM from
//!   `/proc/<child>/status` at 100k, 500k and 1M acked events.
//!
//! `cargo bench -p proof-server --bench ingest` (about a minute on 2 cores);
//! `-- --quick` or `BENCH_QUICK=1`: 1/50 of the sizes, a few seconds, for CI.
//! `PROOF_BENCH_DIR` picks the disk the stores go to (default: the temp dir).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proof_proto::bep;
use proof_proto::bes::{
    build_event::{
        build_component_stream_finished::FinishType, BuildComponentStreamFinished, Event,
    },
    publish_build_event_client::PublishBuildEventClient,
    stream_id::BuildComponent,
    BuildEvent, OrderedBuildEvent, PublishBuildToolEventStreamRequest, StreamId,
};
use proof_server::{GrpcConfig, Metrics};
use proof_store::{FsStore, Store};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

/// The allocator of the `proof` binary, so the memory figures are those of `proof serve`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the child: serve a store in this directory.
const CHILD_ENV: &str = "PROOF_INGEST_BENCH_CHILD_STORE";

struct Sizes {
    one_stream: u64,
    streams: u64,
    per_stream: u64,
    file: u64,
    big: u64,
    checkpoints: [u64; 3],
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_serve(Path::new(&dir));
        return;
    }
    // `cargo test --all-targets` runs this without `--bench`: a quick run.
    let quick = std::env::args().any(|a| a == "--quick")
        || !std::env::args().any(|a| a == "--bench")
        || std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let d = if quick { 50 } else { 1 };
    let s = Sizes {
        one_stream: 300_000 / d,
        streams: 32,
        per_stream: 20_000 / d,
        file: 1_000_000 / d,
        big: 1_000_000 / d,
        checkpoints: [100_000 / d, 500_000 / d, 1_000_000 / d],
    };
    let base = std::env::var_os("PROOF_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("bench dir");
    let t_all = Instant::now();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut rows: Vec<[String; 5]> = Vec::new();

    // 1. One stream, in-process server.
    {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let (elapsed, commits) = rt.block_on(async {
            let srv = InProc::start(dir.path()).await;
            let t = Instant::now();
            stream(srv.addr, "bench-one".into(), s.one_stream, None).await;
            let e = t.elapsed();
            let commits = Metrics::get(&srv.metrics.store_commits);
            srv.stop().await;
            (e, commits)
        });
        let n = s.one_stream + 1;
        rows.push(row(
            "gRPC loopback, 1 stream",
            &fmt_n(s.one_stream),
            elapsed,
            s.one_stream,
            &format!(
                "{:.0} events per group commit (fsync)",
                n as f64 / commits.max(1) as f64
            ),
        ));
    }

    // 2. 32 concurrent streams, in-process server.
    {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let (elapsed, commits) = rt.block_on(async {
            let srv = InProc::start(dir.path()).await;
            let t = Instant::now();
            let tasks: Vec<_> = (0..s.streams)
                .map(|i| {
                    tokio::spawn(stream(
                        srv.addr,
                        format!("bench-many-{i:02}"),
                        s.per_stream,
                        None,
                    ))
                })
                .collect();
            for t in tasks {
                t.await.expect("stream task");
            }
            let e = t.elapsed();
            let commits = Metrics::get(&srv.metrics.store_commits);
            for i in 0..s.streams {
                let st = srv
                    .store
                    .state(&format!("bench-many-{i:02}"))
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    st.event_count, s.per_stream,
                    "every event of every stream stored"
                );
            }
            srv.stop().await;
            (e, commits)
        });
        let total = s.streams * s.per_stream;
        rows.push(row(
            &format!("gRPC loopback, {} concurrent streams", s.streams),
            &format!("{} x {}", s.streams, fmt_n(s.per_stream)),
            elapsed,
            total,
            &format!(
                "{:.0} events per group commit",
                (total + s.streams) as f64 / commits.max(1) as f64
            ),
        ));
    }

    // 3. File ingest of a generated bep.bin.
    {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let file = dir.path().join("bep.bin");
        let mut w = BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut buf = Vec::new();
        let mut bytes = 0u64;
        for i in 1..=s.file {
            buf.clear();
            proof_stream::delimited::write_delimited(&mut buf, &bep_event("bench-file", i, s.file));
            bytes += buf.len() as u64;
            w.write_all(&buf).unwrap();
        }
        w.into_inner().unwrap().sync_all().unwrap();
        let store = FsStore::open(&dir.path().join("store")).unwrap();
        let t = Instant::now();
        let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&file).unwrap());
        let (_, fin) = proof_ingest::ingest_file(&store, reader, 0, |_| {}).expect("ingest_file");
        let elapsed = t.elapsed();
        assert!(fin.complete, "{:?}", fin.reason);
        assert_eq!(fin.summary.event_count, s.file);
        rows.push(row(
            "file, proof_ingest::ingest_file",
            &fmt_n(s.file),
            elapsed,
            s.file,
            &format!(
                "bep.bin {:.1} MB ({:.0} B/event), finalize included",
                bytes as f64 / 1e6,
                bytes as f64 / s.file as f64
            ),
        ));
    }

    // 4. Memory of a server process along a 1M-event stream.
    let mem = {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the server child");
        let pid = child.id();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("child address");
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening ")
            .expect("child says where it listens")
            .parse()
            .unwrap();
        let mut samples = vec![("idle".to_string(), proc_mem(pid))];
        let progress = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let elapsed = rt.block_on(async {
            let run = tokio::spawn(stream(
                addr,
                "bench-big".into(),
                s.big,
                Some(progress.clone()),
            ));
            for &c in &s.checkpoints {
                while progress.load(Ordering::Relaxed) < c {
                    assert!(
                        t.elapsed() < Duration::from_secs(600),
                        "the 1M stream stalled"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                samples.push((format!("{} acked", fmt_n(c)), proc_mem(pid)));
            }
            run.await.expect("stream task");
            t.elapsed()
        });
        // Let the server finalize (reads the whole journal back), then sample again.
        std::thread::sleep(Duration::from_millis(if quick { 200 } else { 1500 }));
        samples.push(("finalized".to_string(), proc_mem(pid)));
        drop(child.stdin.take()); // EOF: the child shuts down
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        // The child is gone (its store lock with it): check what it stored.
        let store = FsStore::open(dir.path()).expect("store of the child");
        let st = store.state("bench-big").unwrap().expect("bench-big stored");
        assert_eq!(st.event_count, s.big, "every event of the 1M stream stored");
        if !st.finalized {
            println!("note: the child had not finalized bench-big when sampled");
        }
        rows.push(row(
            "gRPC loopback, 1 stream, server in a child process",
            &fmt_n(s.big),
            elapsed,
            s.big,
            "memory below",
        ));
        samples
    };

    // Live ingest beside its baseline measured in this run: importing a
    // file of the same kind of events (no network, one writer).
    let rate = |r: &[String; 5]| r[3].replace(',', "").parse::<f64>().unwrap_or(0.0);
    let file_rate = rows
        .iter()
        .find(|r| r[0].starts_with("file"))
        .map_or(0.0, rate);
    for r in rows.iter_mut().filter(|r| r[0].starts_with("gRPC")) {
        let ratio = rate(r) / file_rate.max(1.0);
        r[4] = format!("{}; {ratio:.2}x the events/s of file ingest", r[4]);
    }

    // The table.
    println!();
    println!(
        "rbe-proof BES ingest benchmark ({} sizes), {} CPUs, stores under {}",
        if quick { "quick: 1/50" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        base.display()
    );
    let widths = [52, 14, 9, 12, 0];
    let header = ["measure", "events", "seconds", "events/s", "notes"];
    print_row(&header.map(String::from), &widths);
    print_row(&widths.map(|w| "-".repeat(w.max(5))), &widths);
    for r in &rows {
        print_row(r, &widths);
    }
    println!();
    println!("server child memory along the {}-event stream (same serve_grpc + FsStore as `proof serve`):", fmt_n(s.big));
    println!("  {:<16} {:>12} {:>12}", "point", "VmRSS MiB", "VmHWM MiB");
    for (label, (rss, hwm)) in &mem {
        println!("  {label:<16} {rss:>12.1} {hwm:>12.1}");
    }
    let after_first = mem[1].1 .1;
    let at_end = mem[mem.len() - 2].1 .1;
    println!(
        "  peak growth from {} to {} events: {:+.1} MiB",
        fmt_n(s.checkpoints[0]),
        fmt_n(s.checkpoints[2]),
        at_end - after_first
    );
    println!("total bench time {:.1} s", t_all.elapsed().as_secs_f64());
}

fn print_row(r: &[String; 5], w: &[usize; 5]) {
    println!(
        "| {:<a$} | {:>b$} | {:>c$} | {:>d$} | {} |",
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        a = w[0],
        b = w[1],
        c = w[2],
        d = w[3]
    );
}

fn row(what: &str, events: &str, elapsed: Duration, n: u64, notes: &str) -> [String; 5] {
    let secs = elapsed.as_secs_f64();
    [
        what.to_string(),
        events.to_string(),
        format!("{secs:.2}"),
        fmt_n((n as f64 / secs) as u64),
        notes.to_string(),
    ]
}

fn fmt_n(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn proc_mem(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

struct InProc {
    addr: SocketAddr,
    store: Arc<FsStore>,
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProc {
    async fn start(dir: &Path) -> InProc {
        let store = Arc::new(FsStore::open(dir).expect("store"));
        let metrics = Arc::new(Metrics::default());
        let (listener, addr) = proof_server::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let cfg = GrpcConfig {
            metrics: metrics.clone(),
            ..GrpcConfig::open(store.clone())
        };
        let task = tokio::spawn(async move {
            proof_server::serve_grpc(listener, cfg, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve_grpc");
        });
        InProc {
            addr,
            store,
            metrics,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// The child: what `proof serve` runs (no proof signing), until stdin closes.
fn child_serve(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(FsStore::open(dir).expect("store"));
        let (listener, addr) = proof_server::bind("127.0.0.1:0").await.unwrap();
        println!("listening {addr}");
        std::io::stdout().flush().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            let _ = tx.send(());
        });
        let cfg = GrpcConfig::open(store);
        proof_server::serve_grpc(listener, cfg, async {
            let _ = rx.await;
        })
        .await
        .expect("serve_grpc");
    });
}

// ---------------------------------------------------------------------------
// Client and events
// ---------------------------------------------------------------------------

/// Streams `n` BEP events and the finish on one RPC, pipelined; checks every
/// ack arrives in order and the RPC ends OK. `progress` = events acked so far.
async fn stream(addr: SocketAddr, id: String, n: u64, progress: Option<Arc<AtomicU64>>) {
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut client = PublishBuildEventClient::new(ch);
    let (tx, rx) = mpsc::channel::<PublishBuildToolEventStreamRequest>(1024);
    let sid = StreamId {
        build_id: format!("build-{id}"),
        component: BuildComponent::Tool as i32,
        invocation_id: id.clone(),
    };
    let sender = {
        let sid = sid.clone();
        tokio::spawn(async move {
            for seq in 1..=n + 1 {
                let event = if seq <= n {
                    Event::BazelEvent(prost_types::Any {
                        type_url: proof_proto::BEP_EVENT_TYPE_URL.into(),
                        value: bep_event(&sid.invocation_id, seq, n),
                    })
                } else {
                    Event::ComponentStreamFinished(BuildComponentStreamFinished {
                        r#type: FinishType::Finished as i32,
                    })
                };
                let req = PublishBuildToolEventStreamRequest {
                    ordered_build_event: Some(OrderedBuildEvent {
                        stream_id: Some(sid.clone()),
                        sequence_number: seq as i64,
                        event: Some(BuildEvent {
                            event_time: None,
                            event: Some(event),
                        }),
                    }),
                    project_id: "bench".into(),
                    ..Default::default()
                };
                if tx.send(req).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut acks = client
        .publish_build_tool_event_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open the stream")
        .into_inner();
    let mut expect = 1u64;
    while let Some(a) = acks.message().await.expect("stream ends OK") {
        assert_eq!(a.sequence_number as u64, expect, "acks in order");
        if let Some(p) = &progress {
            p.store(expect, Ordering::Relaxed);
        }
        expect += 1;
    }
    assert_eq!(expect - 1, n + 1, "{id}: every event acked");
    sender.await.expect("sender");
}

fn id_progress(n: i32) -> bep::BuildEventId {
    bep::BuildEventId {
        id: Some(bep::build_event_id::Id::Progress(
            bep::build_event_id::ProgressId { opaque_count: n },
        )),
    }
}

/// Event `i` (1-based) of a synthetic `n`-event BEP stream: BuildStarted,
/// progress events with console output, BuildFinished, BuildToolLogs with
/// `last_message`.
fn bep_event(id: &str, i: u64, n: u64) -> Vec<u8> {
    use bep::build_event::Payload;
    use bep::build_event_id::Id;
    let ev = if i == 1 {
        bep::BuildEvent {
            id: Some(bep::BuildEventId {
                id: Some(Id::Started(Default::default())),
            }),
            children: vec![id_progress(0)],
            payload: Some(Payload::Started(bep::BuildStarted {
                uuid: id.to_string(),
                start_time_millis: 1_764_201_600_000,
                build_tool_version: "8.0.0".into(),
                command: "build".into(),
                working_directory: "/home/rig/ws".into(),
                workspace_directory: "/home/rig/ws".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    } else if i == n - 1 {
        bep::BuildEvent {
            id: Some(bep::BuildEventId {
                id: Some(Id::BuildFinished(Default::default())),
            }),
            payload: Some(Payload::Finished(bep::BuildFinished {
                overall_success: true,
                exit_code: Some(bep::build_finished::ExitCode {
                    name: "SUCCESS".into(),
                    code: 0,
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    } else if i == n {
        bep::BuildEvent {
            id: Some(bep::BuildEventId {
                id: Some(Id::BuildToolLogs(Default::default())),
            }),
            last_message: true,
            payload: Some(Payload::BuildToolLogs(Default::default())),
            ..Default::default()
        }
    } else {
        let k = (i - 2) as i32;
        bep::BuildEvent {
            id: Some(id_progress(k)),
            children: vec![id_progress(k + 1)],
            payload: Some(Payload::Progress(bep::Progress {
                stdout: format!(
                    "[{} / {}] Compiling src/pkg{}/file_{k}.cc; {}s remote, worker-{}\n",
                    k + 1,
                    n,
                    k % 97,
                    k % 13,
                    k % 7
                ),
                stderr: if k % 5 == 0 {
                    format!("INFO: From Compiling src/pkg{}/file_{k}.cc: warning: unused variable 'x{k}'\n", k % 97)
                } else {
                    String::new()
                },
            })),
            ..Default::default()
        }
    };
    ev.encode_to_vec()
}
