//! A BuildGrid server of a test's own, rendered from the rig's template
//! (tests/rig/buildgrid.yml.in, the rig's version) on another loopback port
//! with its own state and its own scheduler database on the rig's
//! PostgreSQL cluster. For tests that need the template's newest instances
//! (e.g. "readonly") without restarting the shared rig. No bot serves it:
//! it is for CAS / ActionCache / Operations questions, not for builds.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::repo_root;

fn rig_dir() -> PathBuf {
    PathBuf::from(std::env::var("RIG_DIR").unwrap_or_else(|_| "/tmp/rbe-proof-rig".into()))
}

/// A running BuildGrid; its process group is ended on drop.
pub struct OwnBuildGrid {
    child: Child,
    /// host:port
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl OwnBuildGrid {
    pub fn endpoint(&self) -> String {
        format!("grpc://{}", self.addr)
    }
}

impl Drop for OwnBuildGrid {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).status();
        let _ = self.child.wait();
    }
}

/// Starts BuildGrid 0.4.x from tests/rig/buildgrid.yml.in (database `tag`
/// created afresh on the rig's cluster) and waits until its port accepts
/// connections (60 s at most).
pub fn start(tag: &str) -> OwnBuildGrid {
    use std::os::unix::process::CommandExt;
    let version = std::env::var("RIG_BUILDGRID_VERSION").unwrap_or_default();
    assert!(
        !version.starts_with("0.2."),
        "this helper renders the 0.4 template; the rig runs BuildGrid {version}"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let port = std::fs::read_to_string(rig_dir().join("pg/port")).expect(
        "the rig's PostgreSQL cluster ($RIG_DIR/pg) is not there: start the rig with tests/rig/start-rig.sh",
    );
    let port = port.trim();
    let db = format!(
        "{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let created = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            port,
        ])
        .args(["-U", "proof", "-d", "postgres", "-c"])
        .arg(format!("CREATE DATABASE {db}"))
        .status()
        .unwrap();
    assert!(created.success(), "cannot create database {db}");
    let url = format!("postgresql+psycopg2://proof@127.0.0.1:{port}/{db}");
    let bin = rig_dir().join("venv/bin");
    let migrated = Command::new(bin.join("bgd"))
        .args(["migrate", "apply", &url])
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "bgd migrate apply {url}: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let addr = format!("127.0.0.1:{}", crate::pg::free_port());
    let config = std::fs::read_to_string(repo_root().join("tests/rig/buildgrid.yml.in"))
        .unwrap()
        .replace("@LISTEN@", &addr)
        .replace("@STATE_DIR@", state.to_str().unwrap())
        .replace("@DB_URL@", &url)
        .replace("@MAX_PAGE_SIZE@", "1000");
    let yml = state.join("buildgrid.yml");
    std::fs::write(&yml, config).unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(bin.join("bgd"))
        .args(["server", "start", "-v"])
        .arg(&yml)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let bg = OwnBuildGrid { child, addr, dir };
    let t = Instant::now();
    while std::net::TcpStream::connect(&bg.addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "BuildGrid did not listen on {} within 60 s:\n{}",
            bg.addr,
            std::fs::read_to_string(bg.dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    bg
}
