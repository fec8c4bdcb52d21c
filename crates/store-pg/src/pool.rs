//! The connection pool: r2d2 over `postgres` clients made with the store URL's settings
//! (and TLS), each validated before use so connections cut by a database restart are
//! replaced.

use std::time::Duration;

use postgres::NoTls;
use proof_store::StoreError;

use crate::tls::{split_url, Connector, TlsSettings};
use crate::{describe, redact};

pub(crate) type Pool = r2d2::Pool<Manager>;
pub(crate) type Conn = r2d2::PooledConnection<Manager>;

/// The pool's connection manager: connects with the store's settings (and TLS), validates
/// a connection before each use (so connections cut by a database restart are replaced).
#[derive(Debug)]
pub(crate) struct Manager {
    config: postgres::Config,
    connector: Connector,
    tls: TlsSettings,
    /// The host(s) of the URL, for messages.
    host: String,
}

/// A failed connection, explained (TLS causes say what to change).
#[derive(Debug)]
pub(crate) struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl Manager {
    fn connect_client(&self) -> Result<postgres::Client, ConnectError> {
        let r = match &self.connector {
            Connector::Plain => self.config.connect(NoTls),
            Connector::Tls(c) => self.config.connect(c.clone()),
        };
        r.map_err(|e| ConnectError(self.tls.explain(&self.host, &describe(&e))))
    }
}

/// A pooled connection. `postgres::Client` closes itself by blocking on its own runtime,
/// which panics on a thread that drives async tasks (a store dropped inside the server's
/// runtime at shutdown): closing is moved to a short-lived thread of its own.
pub(crate) struct PgConn(Option<postgres::Client>);

impl std::ops::Deref for PgConn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.0.as_ref().expect("connection present until dropped")
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0.as_mut().expect("connection present until dropped")
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(c));
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<PgConn, ConnectError> {
        self.connect_client().map(|c| PgConn(Some(c)))
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectError> {
        conn.simple_query("")
            .map(|_| ())
            .map_err(|e| ConnectError(describe(&e)))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_closed()
    }
}

/// How long a call waits for a database connection before it fails (and the server
/// answers UNAVAILABLE, so Bazel retries).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connection settings of a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections this process opens.
    pub max_connections: u32,
    /// Wait this long for a connection (pool or new) before a call fails.
    pub connect_timeout: Duration,
    /// Apply pending migrations when connecting (otherwise fail if any is pending).
    pub migrate: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            migrate: true,
        }
    }
}

/// r2d2 reports failed connection attempts here (they also fail the call that waited).
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<ConnectError> for LogErrors {
    fn handle_error(&self, error: ConnectError) {
        tracing::warn!(error = %error, "PostgreSQL connection failed");
    }
}

/// The pool for `url` with `opts`, and the URL without its password (for messages).
/// Connects lazily: the first call that needs a connection reports a failure.
pub(crate) fn open(url: &str, opts: &PgOptions) -> Result<(Pool, String), StoreError> {
    let display = redact(url);
    let (wire, tls) = split_url(url)?;
    let connector = tls.connector()?;
    let mut config: postgres::Config = wire.parse().map_err(|e| StoreError::Database {
        context: format!(
            "parsing the store URL {display} (expected postgres://USER[:PASSWORD]@HOST:PORT/DATABASE)"
        ),
        source: Box::new(e),
    })?;
    config
        .connect_timeout(opts.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .application_name("proof");
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let manager = Manager {
        config,
        connector,
        tls,
        host,
    };
    let pool = r2d2::Pool::builder()
        .max_size(opts.max_connections.max(2))
        .min_idle(Some(0))
        .connection_timeout(opts.connect_timeout)
        .test_on_check_out(true)
        .error_handler(Box::new(LogErrors))
        .build_unchecked(manager);
    Ok((pool, display))
}
