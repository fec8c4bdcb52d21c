//! Helpers shared by rbe-proof's end-to-end tests: the `proof` binary as a
//! child process, the loopback rig, fixtures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_proto::bep;

pub mod buildgrid;
pub mod chromium;
pub mod forge;
pub mod pg;

/// The repository root, a Bazel 4.2.3 fixture file, the records of a delimited file and
/// the BEP events a store holds: kept in proof-testkit, named here as before.
pub use proof_testkit::fixtures::{delimited_records, fixture, repo_root, stored_events};

/// The real third-party Bazel streams, kept outside the repository in the
/// shared folder beside it (`<repo>/../shared/fixtures/real`, or
/// `$PROOF_REAL_FIXTURES`): `real_fixture("bazel-9.0.0-build/bep.ndjson")`,
/// named as in that folder's SOURCES. Panics, saying where the files are
/// expected, when they are missing.
pub use proof_fixtures::real_file as real_fixture;

/// The `proof` binary of this checkout, built once if this test run did not
/// build it already.
pub fn proof_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/proof
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let bin = profile_dir.join("proof");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "proof-cli", "--bin", "proof"])
            .args(if profile_dir.ends_with("release") {
                &["--release"][..]
            } else {
                &[][..]
            })
            .current_dir(repo_root())
            .status()
            .expect("run cargo build for the proof binary");
        assert!(status.success(), "cargo build -p proof-cli failed");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// A fresh ed25519 key pair written as `DIR/proof.key` and `DIR/proof.pub` (PEM):
/// (private, public).
pub fn keypair(dir: &Path) -> (PathBuf, PathBuf) {
    let (private_pem, public_pem) = proof_artifact::generate().expect("generate a key pair");
    let (k, p) = (dir.join("proof.key"), dir.join("proof.pub"));
    std::fs::write(&k, private_pem).expect("write the private key");
    std::fs::write(&p, public_pem).expect("write the public key");
    (k, p)
}

/// Runs `proof ARGS` and prints what it said: (exit code, stdout + stderr).
pub fn run_proof(args: &[&str]) -> (i32, String) {
    let out = Command::new(proof_bin())
        .args(args)
        .output()
        .expect("run proof");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "proof {} -> {:?}\n{text}",
        args.join(" "),
        out.status.code()
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `proof verify --json --key PUBLIC ARTIFACT FLAGS...`: (exit code, checks by name,
/// the whole JSON report).
pub fn verify_json(
    public: &Path,
    artifact: &Path,
    flags: &[&str],
) -> (i32, serde_json::Value, serde_json::Value) {
    let mut full = vec![
        "verify",
        "--json",
        "--key",
        public.to_str().expect("UTF-8 path"),
        artifact.to_str().expect("UTF-8 path"),
    ];
    full.extend(flags);
    let (code, text) = run_proof(&full);
    let start = text.find('{').expect("a JSON report");
    let v: serde_json::Value = serde_json::from_str(&text[start..]).expect("a JSON report");
    let mut by_name = serde_json::Map::new();
    for c in v["checks"].as_array().expect("checks") {
        by_name.insert(c["name"].as_str().expect("name").to_string(), c.clone());
    }
    (code, serde_json::Value::Object(by_name), v)
}

/// A `proof serve` child process; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub store: PathBuf,
    /// Every line the server printed on stdout so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `proof serve --listen ADDR --store STORE EXTRA...` and waits until it listens.
    pub fn start(listen: &str, store: &Path, extra: &[&str]) -> Server {
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            listen.into(),
            "--store".into(),
            store.to_str().expect("utf-8 store path").into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Server::start_args(None, &args);
        server.store = store.to_path_buf();
        server
    }

    /// Starts `proof ARGS...` (a `serve` command line) in `cwd` and waits until it listens.
    /// `store` is `--store`'s value when given, else the default `proof-store`.
    pub fn start_args(cwd: Option<&Path>, args: &[String]) -> Server {
        let mut cmd = Command::new(proof_bin());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .args(args)
            .env("PROOF_LOG", "info")
            .env_remove("PROOF_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn proof serve");
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("BES listening on grpc://").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                println!("[proof serve] {line}");
                seen.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("proof serve did not report its address within 60 s");
        let store = args
            .iter()
            .position(|a| a == "--store")
            .and_then(|i| args.get(i + 1))
            .map_or_else(|| PathBuf::from("proof-store"), PathBuf::from);
        let store = match cwd {
            Some(dir) if store.is_relative() => dir.join(store),
            _ => store,
        };
        Server {
            child,
            addr,
            store,
            stdout: lines,
        }
    }

    /// The rest of the first stdout line containing `marker` (waits up to 60 s for it).
    pub fn printed(&self, marker: &str) -> String {
        let t = Instant::now();
        loop {
            if let Some(rest) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.to_string()))
            {
                return rest;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "proof serve did not print {marker:?} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn target(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// SIGKILL, as `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The loopback rig, as `tests/run-all.sh` exported it.
pub struct Rig {
    pub remote_executor: String,
    pub run_bazel: PathBuf,
    pub copy_spoke: PathBuf,
}

/// The rig, or a panic that says how to start it: these tests are never skipped.
pub fn rig() -> Rig {
    let Ok(exec) = std::env::var("RIG_REMOTE_EXECUTOR") else {
        panic!(
            "RIG_REMOTE_EXECUTOR is not set: real-Bazel tests need the loopback rig. \
             Run the suite with `bash tests/run-all.sh` (it installs and starts the rig), \
             or start it with `bash tests/rig/start-rig.sh` and `set -a; . /tmp/rbe-proof-rig/run/rig.env`."
        )
    };
    Rig {
        remote_executor: exec,
        run_bazel: repo_root().join("tests/rig/run-bazel.sh"),
        copy_spoke: repo_root().join("tests/rig/copy-spoke.sh"),
    }
}

/// Output of one Bazel command.
pub struct BazelRun {
    pub code: i32,
    pub output: String,
}

impl Rig {
    /// A fresh copy of the example spoke in `dir` (which must not exist).
    pub fn spoke(&self, dir: &Path) {
        let st = Command::new("bash")
            .arg(&self.copy_spoke)
            .arg(dir)
            .stdout(Stdio::null())
            .status()
            .expect("copy-spoke");
        assert!(st.success(), "copy-spoke.sh failed");
    }

    /// Runs Bazel in workspace `ws` with the rig's fixed small environment.
    pub fn bazel(&self, ws: &Path, args: &[&str]) -> BazelRun {
        let t = Instant::now();
        let out = Command::new("bash")
            .arg(&self.run_bazel)
            .arg(ws)
            .arg("--")
            .args(args)
            .output()
            .expect("run-bazel.sh");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "bazel {} -> {:?} in {:.1}s\n{output}",
            args.join(" "),
            out.status.code(),
            t.elapsed().as_secs_f64()
        );
        BazelRun {
            code: out.status.code().unwrap_or(-1),
            output,
        }
    }

    /// Stops the Bazel server of `ws`.
    pub fn shutdown(&self, ws: &Path) {
        let _ = Command::new("bash")
            .arg(&self.run_bazel)
            .arg(ws)
            .args(["--", "shutdown"])
            .output();
    }
}

/// The invocation id (BuildStarted's uuid) of a `--build_event_binary_file`.
pub fn bep_invocation_id(bep: &Path) -> String {
    let first = delimited_records(bep)
        .into_iter()
        .next()
        .expect("bep has events");
    proof_stream::probe::probe(&first)
        .unwrap()
        .started_uuid
        .expect("first event is BuildStarted")
}

/// One HTTP/1.1 GET to `addr` (with a bearer `token` if given); returns (status, body).
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Waits until `path` exists, at most `secs` seconds.
pub fn wait_for_file(path: &Path, secs: u64) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{} did not appear within {secs} s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of the `n`th progress event.
pub fn progress_id(n: i32) -> bep::BuildEventId {
    bep::BuildEventId {
        id: Some(bep::build_event_id::Id::Progress(
            bep::build_event_id::ProgressId { opaque_count: n },
        )),
    }
}

/// One event, serialized.
pub fn encode_event(ev: &bep::BuildEvent) -> Bytes {
    Bytes::from(prost::Message::encode_to_vec(ev))
}

/// A realistic synthetic BEP stream of `n` (≥ 4) events: BuildStarted (uuid =
/// the invocation id), progress events with console output, BuildFinished,
/// and a BuildToolLogs event with `last_message`.
pub fn synthetic_stream(invocation_id: &str, n: usize) -> Vec<Bytes> {
    assert!(n >= 4);
    let mut v = Vec::with_capacity(n);
    v.push(encode_event(&bep::BuildEvent {
        id: Some(bep::BuildEventId {
            id: Some(bep::build_event_id::Id::Started(
                bep::build_event_id::BuildStartedId {},
            )),
        }),
        children: vec![progress_id(0)],
        payload: Some(bep::build_event::Payload::Started(bep::BuildStarted {
            uuid: invocation_id.to_string(),
            start_time_millis: 1_764_201_600_000,
            build_tool_version: "8.0.0".into(),
            options_description: "--remote_executor=grpc://127.0.0.1:50051".into(),
            command: "build".into(),
            working_directory: "/home/rig/ws".into(),
            workspace_directory: "/home/rig/ws".into(),
            server_pid: 4242,
            ..Default::default()
        })),
        ..Default::default()
    }));
    let progress = n - 3;
    for i in 0..progress {
        let i = i as i32;
        v.push(encode_event(&bep::BuildEvent {
            id: Some(progress_id(i)),
            children: vec![progress_id(i + 1)],
            payload: Some(bep::build_event::Payload::Progress(bep::Progress {
                stdout: format!(
                    "[{} / {progress}] Compiling src/pkg{}/file_{i}.cc; {}s remote, worker-{}\n",
                    i + 1,
                    i % 97,
                    i % 13,
                    i % 7
                ),
                stderr: if i % 5 == 0 {
                    format!("INFO: From Compiling src/pkg{}/file_{i}.cc: warning: unused variable 'x{i}'\n", i % 97)
                } else {
                    String::new()
                },
            })),
            ..Default::default()
        }));
    }
    v.push(encode_event(&bep::BuildEvent {
        id: Some(bep::BuildEventId {
            id: Some(bep::build_event_id::Id::BuildFinished(
                bep::build_event_id::BuildFinishedId {},
            )),
        }),
        children: vec![bep::BuildEventId {
            id: Some(bep::build_event_id::Id::BuildToolLogs(
                bep::build_event_id::BuildToolLogsId {},
            )),
        }],
        payload: Some(bep::build_event::Payload::Finished(bep::BuildFinished {
            overall_success: true,
            exit_code: Some(bep::build_finished::ExitCode {
                name: "SUCCESS".into(),
                code: 0,
            }),
            finish_time_millis: 1_764_201_900_000,
            ..Default::default()
        })),
        ..Default::default()
    }));
    v.push(encode_event(&bep::BuildEvent {
        id: Some(bep::BuildEventId {
            id: Some(bep::build_event_id::Id::BuildToolLogs(
                bep::build_event_id::BuildToolLogsId {},
            )),
        }),
        last_message: true,
        payload: Some(bep::build_event::Payload::BuildToolLogs(
            bep::BuildToolLogs::default(),
        )),
        ..Default::default()
    }));
    assert_eq!(v.len(), n);
    v
}

/// `events` (BEP records) with BuildStarted's uuid set to `id`: one recorded
/// stream serves many invocations (the server requires the stream's invocation
/// id to be the build's).
pub fn renamed(events: impl IntoIterator<Item = impl AsRef<[u8]>>, id: &str) -> Vec<Bytes> {
    use prost::Message;
    events
        .into_iter()
        .map(|bytes| {
            let mut ev = bep::BuildEvent::decode(bytes.as_ref()).expect("a BEP record");
            if let Some(bep::build_event::Payload::Started(s)) = ev.payload.as_mut() {
                s.uuid = id.to_string();
            }
            Bytes::from(ev.encode_to_vec())
        })
        .collect()
}

/// Replays `events` under `id` to the BES at `target` the way Bazel streams
/// them (no retries), to the end (ComponentStreamFinished), on a runtime of
/// its own. Panics unless the last event was acked. Call it from outside a
/// runtime.
pub fn replay_stream(target: &str, id: &str, events: Vec<Bytes>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    replay_stream_on(&rt, target, id, events, true);
}

/// [`replay_stream`] on `rt`; `finish`: end with ComponentStreamFinished,
/// else the stream stays open while `rt` lives.
pub fn replay_stream_on(
    rt: &tokio::runtime::Runtime,
    target: &str,
    id: &str,
    events: Vec<Bytes>,
    finish: bool,
) {
    use proof_server::replay::{replay, Faults, ReplayOptions};
    let opts = ReplayOptions {
        target: target.into(),
        invocation_id: id.into(),
        build_id: format!("build-{id}"),
        project_id: String::new(),
        headers: Vec::new(),
        max_retries: 0,
        backoff: Duration::from_millis(10),
        faults: Faults::default(),
        finish,
    };
    let n = events.len() as u64;
    let report = rt.block_on(replay(events, &opts)).expect("replay");
    assert!(report.acked.contains(&n), "{id}: event {n} was not acked");
}

/// `--action_env=PROOF_<TAG>_NONCE=<unique>`: a nonce in every action key, so the
/// rig's shared action cache never answers for a test's actions.
pub fn action_nonce(tag: &str) -> String {
    format!(
        "--action_env=PROOF_{tag}_NONCE={}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos()
    )
}

/// Waits (at most 120 s) for the server to sign `DIR/ID.proof.tar` (renamed into
/// place whole).
pub fn wait_for_proof(dir: &Path, id: &str) -> PathBuf {
    let path = dir.join(format!("{id}.proof.tar"));
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no proof {} within 120 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    path
}

/// One check of `proof verify --json`'s checks by name: (ok, detail).
pub fn verify_check(checks: &serde_json::Value, name: &str) -> (bool, String) {
    let c = &checks[name];
    assert!(c.is_object(), "no check {name} in {checks}");
    (
        c["ok"].as_bool().expect("a check's ok is a bool"),
        c["detail"]
            .as_str()
            .expect("a check's detail is text")
            .to_string(),
    )
}
