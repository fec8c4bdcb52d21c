//! The `proof` command against the bare cost of the same work, as whole
//! processes on the same inputs, in one run (see docs/performance.md):
//!
//! - `proof ingest` of a JSON stream vs parsing its lines with serde_json
//!   into `IgnoredAny` (this binary, re-executed), for the fixture's stream
//!   and for a real Bazel 9.0.0 one (bazel-9.0.0-build of the real streams in
//!   the shared folder beside the repository, `../shared/fixtures/real`);
//! - `proof ingest` of the binary stream vs `zstd -3 | sha256sum`;
//! - `proof verify` of an artifact vs `zstd -d | sha256sum` of its events;
//! - start-up: `proof --version`, `proof list` of a store holding one
//!   invocation, `proof verify` of a small artifact, `proof ingest` of a
//!   small file into a new store, vs starting `true`.
//!
//! Inputs are a real fixture stream (tests/fixtures/bazel-4.2.3/remote-build,
//! or `PERF_FIXTURE=DIR` holding bep.json and bep.bin) enlarged by repeating
//! everything between BuildStarted and BuildFinished.
//!
//! `cargo bench -p proof-cli --bench perf`: 56,380-event streams, a
//! 1,000,000-event artifact. Without `--bench` (as `cargo test
//! --all-targets` runs it) a smoke run of a few seconds. `PERF_EVENTS` and
//! `PERF_VERIFY_EVENTS` set the sizes.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use proof_stream::delimited::{split_delimited, write_delimited};

const CHILD: &str = "PROOF_PERF_CHILD";

fn main() {
    if let Ok(file) = std::env::var(CHILD) {
        ignored_any(Path::new(&file));
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let size = |var: &str, full_n: usize, quick_n: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { full_n } else { quick_n })
    };
    let events = size("PERF_EVENTS", 56_380, 2_000);
    let verify_events = size("PERF_VERIFY_EVENTS", 1_000_000, 5_000);
    let fixture = std::env::var_os("PERF_FIXTURE").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/bazel-4.2.3/remote-build")
        },
        PathBuf::from,
    );
    let proof = env!("CARGO_BIN_EXE_proof");
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let have_zstd = Command::new("zstd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have_zstd,
        "the zstd command is needed for the baselines (apt-get install zstd)"
    );

    let json = d.join("big.json");
    let bin = d.join("big.bin");
    let verify_bin = d.join("verify.bin");
    let json_bytes = std::fs::read(fixture.join("bep.json")).expect("fixture bep.json");
    let bin_bytes = std::fs::read(fixture.join("bep.bin")).expect("fixture bep.bin");
    std::fs::write(&json, enlarge_json(&json_bytes, events)).unwrap();
    std::fs::write(&bin, enlarge_bin(&bin_bytes, events)).unwrap();
    std::fs::write(&verify_bin, salted(&enlarge_bin(&bin_bytes, verify_events))).unwrap();
    let mb = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / 1e6;

    let mut rows: Vec<Row> = Vec::new();

    // JSON ingest: the fixture's stream, and a real Bazel 9.0.0 stream
    // (Timestamps, Durations, fields the schema does not declare), each
    // enlarged to the same number of events.
    let k = if full { 7 } else { 1 };
    let json9 = d.join("big9.json");
    let real9 = proof_fixtures::real_file("bazel-9.0.0-build/bep.ndjson");
    let real9 = std::fs::read(&real9).expect("the real Bazel 9.0.0 fixture");
    std::fs::write(&json9, enlarge_json(&real9, events)).unwrap();
    for (n, (what, file)) in [("", &json), (", Bazel 9.0.0", &json9)]
        .into_iter()
        .enumerate()
    {
        let (ingest, parse) = measure_pair(
            k,
            |i| {
                let mut c = Command::new(proof);
                c.args(["ingest", "--store"])
                    .arg(d.join(format!("store-json{n}-{i}")))
                    .arg(file);
                c
            },
            |_| {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.env(CHILD, file);
                c
            },
            &[0],
        );
        rows.push(Row::new(
            format!(
                "proof ingest, JSON{what} ({events} events, {:.1} MB)",
                mb(file)
            ),
            ingest,
            "serde_json lines into IgnoredAny",
            parse,
            format!(
                "{:.0} events/s of CPU (goal >= 500000); goal <= 3x",
                events as f64 / ingest.cpu.max(0.001)
            ),
        ));
    }

    // Binary ingest.
    let (ingest, base) = measure_pair(
        k,
        |i| {
            let mut c = Command::new(proof);
            let store = if i == 0 {
                "store-bin".to_string()
            } else {
                format!("store-bin{i}")
            };
            c.args(["ingest", "--store"]).arg(d.join(store)).arg(&bin);
            c
        },
        |_| {
            let mut c = Command::new("sh");
            c.args(["-c", "zstd -q -3 -c < \"$1\" | sha256sum > /dev/null", "sh"])
                .arg(&bin);
            c
        },
        &[0],
    );
    rows.push(Row::new(
        format!("proof ingest, binary ({events} events, {:.1} MB)", mb(&bin)),
        ingest,
        "zstd -3 | sha256sum",
        base,
        format!(
            "{:.0} events/s of CPU; goal <= 3x",
            events as f64 / ingest.cpu.max(0.001)
        ),
    ));

    // Verify.
    let key = d.join("k");
    run(Command::new(proof).arg("keygen").arg("--out").arg(&key));
    let pubkey = key.with_extension("pub");
    run(Command::new(proof)
        .arg("record")
        .arg(&verify_bin)
        .arg("--key")
        .arg(key.with_extension("key"))
        .arg("--out")
        .arg(d.join("art")));
    let artifact = only_file(&d.join("art"));
    let events_member = d.join("events.bep.zst");
    {
        let bytes = std::fs::read(&artifact).unwrap();
        let scanned = proof_artifact::tar::scan(&bytes[..]).expect("a canonical artifact");
        let m = scanned.member(proof_artifact::tar::EVENTS).unwrap();
        std::fs::write(
            &events_member,
            &bytes[m.offset as usize..(m.offset + m.size) as usize],
        )
        .unwrap();
    }
    let kv = if full { 3 } else { 1 };
    let (verify, base) = measure_pair(
        kv,
        |_| {
            let mut c = Command::new(proof);
            c.arg("verify").arg(&artifact).arg("--key").arg(&pubkey);
            c
        },
        |_| {
            let mut c = Command::new("sh");
            c.args(["-c", "zstd -q -d -c < \"$1\" | sha256sum > /dev/null", "sh"])
                .arg(&events_member);
            c
        },
        &[0, 1],
    );
    rows.push(Row::new(
        format!(
            "proof verify ({verify_events} events, {:.1} MB)",
            mb(&artifact)
        ),
        verify,
        "zstd -d | sha256sum of events.bep.zst",
        base,
        "goal <= 2x".to_string(),
    ));

    // Start-up, median of several runs each.
    let small = d.join("small");
    run(Command::new(proof)
        .arg("record")
        .arg(fixture.join("bep.bin"))
        .arg("--key")
        .arg(key.with_extension("key"))
        .arg("--out")
        .arg(&small));
    let small_artifact = only_file(&small);
    let one = d.join("store-bin");
    let n = if full { 21 } else { 5 };
    let t = median(n, || run(&mut Command::new("true")));
    for (what, mut cmd, ok) in [
        ("proof --version", Command::new(proof), &[0][..]),
        (
            "proof list (a store of one invocation)",
            Command::new(proof),
            &[0],
        ),
        (
            "proof verify (small artifact)",
            Command::new(proof),
            &[0, 1],
        ),
    ] {
        match what {
            "proof --version" => cmd.arg("--version"),
            "proof list (a store of one invocation)" => cmd.arg("list").arg("--store").arg(&one),
            _ => cmd
                .arg("verify")
                .arg(&small_artifact)
                .arg("--key")
                .arg(&pubkey),
        };
        let r = median(n, || run_allowing(&mut cmd, ok));
        rows.push(Row::new(
            format!("{what}, median of {n}"),
            r,
            "true, median",
            t,
            format!("{:.1} ms wall (goal < 20 ms)", r.wall * 1e3),
        ));
    }
    // An import of the fixture's (small) JSON file, a new store each time:
    // creating the store, its index and the journal, with their syncs.
    let mut i = 0;
    let r = median(n, || {
        i += 1;
        run(Command::new(proof)
            .args(["ingest", "--store"])
            .arg(d.join(format!("store-small{i}")))
            .arg(fixture.join("bep.json")))
    });
    rows.push(Row::new(
        format!("proof ingest (small JSON file, new store), median of {n}"),
        r,
        "true, median",
        t,
        format!("{:.1} ms wall (goal < 20 ms)", r.wall * 1e3),
    ));

    println!();
    println!(
        "rbe-proof performance ({}), whole processes, {} CPUs, one run; fixture {}",
        if full { "full sizes" } else { "smoke sizes" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fixture.display()
    );
    println!(
        "| {:<48} | {:>9} | {:>9} | {:<38} | {:>9} | {:>9} | {:>7} | {:>7} | notes",
        "measure", "wall s", "CPU s", "baseline", "wall s", "CPU s", "wall x", "CPU x"
    );
    for r in &rows {
        println!(
            "| {:<48} | {:>9.3} | {:>9.3} | {:<38} | {:>9.3} | {:>9.3} | {:>7.2} | {:>7.2} | {}",
            r.what,
            r.it.wall,
            r.it.cpu,
            r.base_what,
            r.base.wall,
            r.base.cpu,
            r.it.wall / r.base.wall.max(1e-6),
            r.it.cpu / r.base.cpu.max(1e-4),
            r.notes
        );
    }
    println!(
        "(each the median of {k} runs (verify {kv}), alternating with its baseline; CPU: user + system of the process and its children, from getrusage)"
    );
    let _ = std::io::stdout().flush();
}

struct Row {
    what: String,
    it: Run,
    base_what: &'static str,
    base: Run,
    notes: String,
}

impl Row {
    fn new(what: String, it: Run, base_what: &'static str, base: Run, notes: String) -> Row {
        Row {
            what,
            it,
            base_what,
            base,
            notes,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Run {
    wall: f64,
    cpu: f64,
}

/// User + system seconds of the children this process has waited for (getrusage, in
/// microseconds, not the 10 ms ticks of /proc/self/stat).
fn children_cpu() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(u.user_time()) + secs(u.system_time())
}

fn run(cmd: &mut Command) -> Run {
    run_allowing(cmd, &[0])
}

fn run_allowing(cmd: &mut Command, ok: &[i32]) -> Run {
    let c0 = children_cpu();
    let t = Instant::now();
    let out = cmd.output().expect("start the command");
    let wall = t.elapsed().as_secs_f64();
    let cpu = children_cpu() - c0;
    let code = out.status.code().unwrap_or(-1);
    assert!(
        ok.contains(&code),
        "{cmd:?} exited {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Run { wall, cpu }
}

/// `k` runs each of the commands `mk(i)` and `base(i)` make, alternating (a machine that
/// slows down or speeds up along the way then weighs on both alike): the median of
/// each. `ok` lists the exit codes `mk`'s command may end with (the baseline's: 0).
fn measure_pair(
    k: usize,
    mut mk: impl FnMut(usize) -> Command,
    mut base: impl FnMut(usize) -> Command,
    ok: &[i32],
) -> (Run, Run) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..k {
        a.push(run_allowing(&mut mk(i), ok));
        b.push(run(&mut base(i)));
    }
    (median_of(a), median_of(b))
}

fn median_of(runs: Vec<Run>) -> Run {
    let pick = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Run {
        wall: pick(|r| r.wall),
        cpu: pick(|r| r.cpu),
    }
}

fn median(n: usize, mut f: impl FnMut() -> Run) -> Run {
    let mut runs: Vec<Run> = (0..n).map(|_| f()).collect();
    runs.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    runs[n / 2]
}

fn only_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

/// The child: parse every line of `file` with serde_json into IgnoredAny.
fn ignored_any(file: &Path) {
    let f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file).unwrap());
    let mut n = 0u64;
    for line in f.split(b'\n') {
        let line = line.unwrap();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(&line).expect("a JSON line");
        n += 1;
    }
    assert!(n > 0);
}

/// Head (BuildStarted), body repeated up to `events` in all, tail (from
/// BuildFinished on).
fn enlarge<T: Clone>(items: Vec<T>, finished: usize, events: usize) -> Vec<T> {
    let head = &items[..1];
    let body = &items[1..finished];
    let tail = &items[finished..];
    let want = events.saturating_sub(head.len() + tail.len()).max(1);
    let mut out = head.to_vec();
    out.extend(body.iter().cycle().take(want).cloned());
    out.extend_from_slice(tail);
    out
}

fn enlarge_json(json: &[u8], events: usize) -> Vec<u8> {
    let lines: Vec<&[u8]> = json
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let finished = lines
        .iter()
        .position(|l| l.starts_with(b"{\"id\":{\"buildFinished\""))
        .expect("a BuildFinished line");
    let mut out = Vec::new();
    for l in enlarge(lines, finished, events) {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// Every event with 16 pseudo-random bytes in a field the schema does not
/// declare (number 1000, skipped by every reader): repeated events then
/// compress like a real stream (about 20x), not 4000x, which the
/// decompression bounds of verify (proof_evidence::bounded) refuse.
fn salted(bin: &[u8]) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::new();
    for r in split_delimited(bin, 1 << 26).expect("a delimited stream") {
        let mut ev = r.to_vec();
        ev.extend_from_slice(&[0xc2, 0x3e, 16]); // field 1000, length-delimited, 16 bytes
        for _ in 0..2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ev.extend_from_slice(&x.to_le_bytes());
        }
        write_delimited(&mut out, &ev);
    }
    out
}

fn enlarge_bin(bin: &[u8], events: usize) -> Vec<u8> {
    let recs = split_delimited(bin, 1 << 26).expect("a delimited bep.bin");
    let finished = recs
        .iter()
        .position(|r| proof_stream::probe::probe(r).is_ok_and(|p| p.build_finished))
        .expect("a BuildFinished event");
    let mut out = Vec::new();
    for r in enlarge(recs, finished, events) {
        write_delimited(&mut out, r);
    }
    out
}
