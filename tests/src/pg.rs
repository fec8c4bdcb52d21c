//! PostgreSQL-backed `proof serve` replicas behind HAProxy, for the replica tests and
//! the replica benchmark: a fresh database per test on the cluster of `PROOF_PG_URL`
//! (tests/pg/start-pg.sh), replica processes, the balancer, synthetic BEP streams.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{repo_root, Server};

/// The admin URL of the test cluster (`PROOF_PG_URL`), and a fresh database per test on
/// it, dropped at the end: kept in proof-testkit, named here as before.
pub use proof_testkit::pg::{pg_url, PgBackend as Db};

/// A private PostgreSQL cluster (tests/pg/start-pg.sh in a temporary directory), for
/// tests that stop and restart the database. Stopped and removed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub url: String,
}

fn pg_script(name: &str, args: &[&str]) {
    let st = Command::new("bash")
        .arg(repo_root().join("tests/pg").join(name))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run a tests/pg script");
    assert!(st.success(), "tests/pg/{name} {args:?} failed");
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("proof-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        pg_script("start-pg.sh", &[dir.path().to_str().unwrap()]);
        let env = std::fs::read_to_string(dir.path().join("pg.env")).unwrap();
        let url = env
            .lines()
            .find_map(|l| l.strip_prefix("PROOF_PG_URL="))
            .expect("pg.env has PROOF_PG_URL")
            .to_string();
        Cluster { dir, url }
    }

    /// Stops the server (fast shutdown: open transactions are aborted), keeping the data.
    pub fn stop(&self) {
        pg_script("stop-pg.sh", &[self.dir.path().to_str().unwrap(), "--keep"]);
    }

    /// Starts it again (same data, same port).
    pub fn restart(&self) {
        pg_script("start-pg.sh", &[self.dir.path().to_str().unwrap()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("tests/pg/stop-pg.sh"))
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .status();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `proof serve` replicas on one store; each keeps its port across restarts.
pub struct Replicas {
    pub store: String,
    pub extra: Vec<String>,
    pub addrs: Vec<String>,
    pub servers: Vec<Option<Server>>,
    /// A signing key and proofs directory for a PostgreSQL store started without
    /// `--key`: such a store keeps no key files of its own.
    _keys: Option<tempfile::TempDir>,
}

impl Replicas {
    /// Starts `n` replicas of `proof serve --store STORE EXTRA...`.
    /// On a PostgreSQL store without `--key`, a fresh key pair and proofs directory
    /// (shared by all `n`) are added.
    pub fn start(n: usize, store: &str, extra: &[&str]) -> Replicas {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut keys = None;
        if store.starts_with("postgres") && !extra.iter().any(|a| a == "--key") {
            let dir = tempfile::tempdir().expect("tempdir for the replicas' key");
            let (key, _) = crate::keypair(dir.path());
            extra.extend([
                "--key".to_string(),
                key.display().to_string(),
                "--proofs".to_string(),
                dir.path().join("proofs").display().to_string(),
            ]);
            keys = Some(dir);
        }
        let mut r = Replicas {
            store: store.to_string(),
            extra,
            addrs: Vec::new(),
            servers: Vec::new(),
            _keys: keys,
        };
        for _ in 0..n {
            let s = r.spawn("127.0.0.1:0");
            r.addrs.push(s.addr.clone());
            r.servers.push(Some(s));
        }
        r
    }

    fn spawn(&self, listen: &str) -> Server {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        Server::start(listen, Path::new(&self.store), &extra)
    }

    /// SIGKILL replica `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut s) = self.servers[i].take() {
            s.kill9();
        }
    }

    /// Starts replica `i` again on its old address (it must be dead).
    pub fn restart(&mut self, i: usize) {
        assert!(self.servers[i].is_none(), "replica {i} is running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The old socket may linger for a moment after SIGKILL.
            match std::net::TcpListener::bind(&self.addrs[i]) {
                Ok(l) => {
                    drop(l);
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{} stays busy: {e}", self.addrs[i]),
            }
        }
        let s = self.spawn(&self.addrs[i].clone());
        self.servers[i] = Some(s);
    }

    /// Peak resident memory (VmHWM) of replica `i`, in KiB.
    pub fn peak_rss_kib(&self, i: usize) -> Option<u64> {
        let pid = self.servers[i].as_ref()?.child.id();
        peak_rss_kib(pid)
    }
}

/// Peak resident memory (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn haproxy_bin() -> PathBuf {
    for p in [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("haproxy is not installed: run tests/rig/install-deps.sh (apt package haproxy)")
}

/// HAProxy as the gRPC (h2c) load balancer in front of replicas: round robin per RPC,
/// health checks every 200 ms, a failed connect is re-dispatched to another replica.
pub struct Haproxy {
    pub child: Child,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(backends: &[String]) -> Haproxy {
        Self::start_checked(backends, None)
    }

    /// Starts `bazel build --config=proof //...` of `ws` in the background
    /// (with `nonce`, its BEP also written to `bep`), streaming to the BES
    /// through this balancer.
    pub fn build_in_background(
        &self,
        ws: &Path,
        bep: &Path,
        nonce: &str,
    ) -> std::thread::JoinHandle<crate::BazelRun> {
        let bes = format!("--bes_backend={}", self.target());
        let bep = format!("--build_event_binary_file={}", bep.display());
        let (ws, nonce) = (ws.to_path_buf(), nonce.to_string());
        std::thread::spawn(move || {
            crate::rig().bazel(
                &ws,
                &["build", "--config=proof", "//...", &bes, &nonce, &bep],
            )
        })
    }

    /// Waits (at most 300 s) for a stream under way in `store` (2 events or
    /// more, not finished) and a replica holding a connection: (the
    /// stream's invocation id, that replica's index). Panics when `build`
    /// ends first, "the build ended before {what}".
    pub fn open_stream<T>(
        &self,
        store: &dyn proof_store::Store,
        build: &std::thread::JoinHandle<T>,
        what: &str,
    ) -> (String, usize) {
        let t = Instant::now();
        loop {
            assert!(!build.is_finished(), "the build ended before {what}");
            assert!(t.elapsed() < Duration::from_secs(300), "no stream arrived");
            let open = store
                .list(&Default::default())
                .unwrap()
                .into_iter()
                .find(|r| r.state.last_seq >= 2 && !r.state.saw_stream_finished);
            let holder = self.servers().into_iter().position(|(_, _, cur)| cur > 0);
            if let (Some(rec), Some(i)) = (open, holder) {
                return (rec.meta.invocation_id, i);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like [`Haproxy::start`], but each replica's health check is `GET /readyz` on its
    /// HTTP address (`http[i]`, the replica's `--http`): a draining replica (503) is taken
    /// out of rotation at the next check, before it closes its gRPC listener.
    pub fn start_with_readiness(backends: &[String], http: &[String]) -> Haproxy {
        assert_eq!(backends.len(), http.len());
        Self::start_checked(backends, Some(http))
    }

    fn start_checked(backends: &[String], http: Option<&[String]>) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let sock = dir.path().join("admin.sock");
        let mut cfg = format!(
            "global\n    maxconn 4096\n    stats socket {} mode 600 level admin\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 600s\n\
             \x20   timeout server 600s\n    timeout client-fin 5s\n    retries 3\n\
             \x20   option redispatch 1\n\
             frontend bes\n    bind 127.0.0.1:{port} proto h2\n    default_backend proof\n\
             backend proof\n    balance roundrobin\n",
            sock.display()
        );
        if http.is_some() {
            cfg += "    option httpchk GET /readyz\n";
        }
        for (i, b) in backends.iter().enumerate() {
            let port = http.map_or(String::new(), |h| {
                format!(" port {}", h[i].rsplit(':').next().expect("HOST:PORT"))
            });
            cfg += &format!("    server r{i} {b} proto h2 check{port} inter 200ms fall 1 rise 2\n");
        }
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new(haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn haproxy");
        let addr = format!("127.0.0.1:{port}");
        let t = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "haproxy did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let h = Haproxy { child, addr, dir };
        h.wait_all_up(backends.len());
        h
    }

    pub fn target(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    fn admin(&self, cmd: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock"))
            .expect("haproxy admin socket");
        s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// (server name, status, current streams) of each replica.
    pub fn servers(&self) -> Vec<(String, String, u64)> {
        let csv = self.admin("show stat");
        let mut rows = csv.lines();
        let header: Vec<&str> = rows
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (px, sv, scur, status) = (col("pxname"), col("svname"), col("scur"), col("status"));
        rows.map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > status && f[px] == "proof" && f[sv].starts_with('r'))
            .map(|f| {
                (
                    f[sv].to_string(),
                    f[status].to_string(),
                    f[scur].parse().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Waits until the health checks see `n` replicas up.
    pub fn wait_all_up(&self, n: usize) {
        let t = Instant::now();
        loop {
            let up = self
                .servers()
                .iter()
                .filter(|(_, st, _)| st.starts_with("UP"))
                .count();
            if up == n {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "haproxy sees {up} of {n} replicas up: {:?}",
                self.servers()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replay options as the fault tests use them: Bazel's retry rules with a short
/// back-off and more retries (a kill may cost several).
pub fn replay_opts(target: &str, invocation_id: &str) -> proof_server::replay::ReplayOptions {
    proof_server::replay::ReplayOptions {
        target: target.to_string(),
        invocation_id: invocation_id.to_string(),
        build_id: format!("build-{invocation_id}"),
        project_id: "replica-tests".into(),
        headers: Vec::new(),
        max_retries: 12,
        backoff: Duration::from_millis(100),
        faults: Default::default(),
        finish: true,
    }
}
