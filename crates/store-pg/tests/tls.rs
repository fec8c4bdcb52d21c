//! TLS to PostgreSQL (`sslmode`, `sslrootcert` in the store URL) against a throwaway
//! cluster with TLS on and a self-signed CA (`tests/pg/start-pg.sh DIR --ssl`), stopped at
//! the end; and `sslmode=require` refused by the suite's shared cluster, which has no TLS
//! (`PROOF_PG_URL`; the test fails without it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use proof_store::{AppendFlags, Store};
use proof_store_pg::{PgOptions, PgStore};
use proof_testkit::fixtures::{check_records, meta, read_all, recs};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/pg")
        .join(name)
}

/// A TLS cluster in its own directory, stopped and removed when dropped.
struct TlsCluster {
    dir: tempfile::TempDir,
    port: String,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let dir = tempfile::Builder::new()
            .prefix("proof-pg-tls-")
            .tempdir_in("/tmp")
            .unwrap();
        let st = Command::new("bash")
            .arg(script("start-pg.sh"))
            .arg(dir.path())
            .arg("--ssl")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "start-pg.sh --ssl failed");
        let port = std::fs::read_to_string(dir.path().join("port"))
            .unwrap()
            .trim()
            .to_string();
        TlsCluster { dir, port }
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.crt").display().to_string()
    }

    fn other_ca(&self) -> String {
        self.dir.path().join("other-ca.crt").display().to_string()
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://proof@{host}:{}/proof?{query}", self.port)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("stop-pg.sh"))
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .status();
    }
}

fn opts() -> PgOptions {
    PgOptions {
        connect_timeout: Duration::from_secs(1),
        ..PgOptions::default()
    }
}

fn connects(url: &str) -> PgStore {
    PgStore::connect_with(url, &opts()).unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn refused(url: &str) -> String {
    match PgStore::connect_with(url, &opts()) {
        Ok(_) => panic!("{url}: connected, expected a refusal"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tls_modes_against_a_cluster_with_a_self_signed_ca() {
    let c = TlsCluster::start();
    let (ca, other) = (c.ca(), c.other_ca());

    // Off: plain, as before.
    let s = connects(&c.url("127.0.0.1", "sslmode=disable"));
    assert!(!s.tls_in_use().unwrap(), "sslmode=disable is not encrypted");
    let s = connects(&format!("postgres://proof@127.0.0.1:{}/proof", c.port));
    assert!(!s.tls_in_use().unwrap(), "no sslmode: plain, as before");
    // require: encrypted, the certificate is not checked.
    let s = connects(&c.url("127.0.0.1", "sslmode=require"));
    assert!(s.tls_in_use().unwrap());
    let s = connects(&c.url("127.0.0.1", "sslmode=prefer"));
    assert!(s.tls_in_use().unwrap(), "prefer takes TLS when offered");

    // verify-full with the right CA and a name the certificate carries: the store works.
    let url = c.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let s = connects(&url);
    assert!(s.tls_in_use().unwrap());
    s.open_invocation(&meta("tls-1")).unwrap();
    s.append("tls-1", &recs(1, 50), AppendFlags::default())
        .unwrap();
    check_records(&read_all(&s, "tls-1"), 50);
    drop(s);
    // verify-ca checks the chain, not the name.
    let s = connects(&c.url("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}")));
    assert!(s.tls_in_use().unwrap());

    // A wrong CA is refused, with a message that says what to check.
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = refused(&c.url("127.0.0.1", &format!("sslmode={mode}&sslrootcert={other}")));
        assert!(
            e.contains("is not signed by a CA in sslrootcert=") && e.contains("other-ca.crt"),
            "{mode}: {e}"
        );
        println!("wrong CA, sslmode={mode}: {e}");
    }
    // Without sslrootcert, the system roots do not know the self-signed CA.
    let e = refused(&c.url("127.0.0.1", "sslmode=verify-full"));
    assert!(e.contains("the system's CA roots"), "{e}");
    // A host name the certificate does not carry is refused under verify-full.
    let e = refused(&c.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    assert!(e.contains("does not name the host \"localhost\""), "{e}");
    println!("wrong host name: {e}");
    // Bad settings are refused before connecting.
    let e = refused(&c.url("127.0.0.1", "sslmode=verify-everything"));
    assert!(e.contains("unknown sslmode"), "{e}");
    let e = refused(&c.url(
        "127.0.0.1",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
    ));
    assert!(e.contains("reading sslrootcert=/nonexistent/ca.crt"), "{e}");
    println!("refusals read, e.g.: {e}");
}

#[test]
fn require_is_refused_by_a_server_without_tls() {
    let url = std::env::var("PROOF_PG_URL").unwrap_or_else(|_| {
        panic!(
            "PROOF_PG_URL is not set: start a cluster with `bash tests/pg/start-pg.sh` and \
             `set -a; . /tmp/rbe-proof-pg/pg.env; set +a` (tests/run-all.sh does both)"
        )
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    let e = refused(&format!("{url}{sep}sslmode=require"));
    assert!(e.contains("does not offer it"), "{e}");
    // And the same server without TLS settings works.
    assert!(!connects(&url).tls_in_use().unwrap());
}
