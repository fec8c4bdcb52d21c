//! `PgStore`: the rbe-proof [`Store`] on PostgreSQL, shared by several `proof serve`
//! replicas (and read by the CLI and the web pages).
//!
//! One database holds everything: the index row of each invocation (its sequencing
//! state: `last_seq`, counts, flags, finalization), its journal as frames (the same
//! checksummed, zstd-compressed frames as the embedded store's journal files, one row per
//! frame), and the lifecycle events. An append is one transaction that locks the
//! invocation's row (`SELECT … FOR UPDATE`), checks that the batch starts right after
//! `last_seq`, inserts the frames and moves the state; it returns after `COMMIT`, so a
//! caller acks only what is durable. Two replicas appending to one invocation are
//! serialized by the row lock, and the second one's batch no longer follows `last_seq`:
//! it gets [`StoreError::SeqGap`] and its client retries from the stored prefix.
//!
//! [`Store::exclusive`] is a session-level advisory lock, released by PostgreSQL when
//! the holder's connection ends (a replica killed mid-finalization leaves no stale lock).
//!
//! Schema changes are versioned migrations ([`MIGRATIONS`]), applied at connect time
//! under a transaction-level advisory lock so replicas starting together apply each once.
//! See `docs/store.md`.
//!
//! Modules: `pool` (connections), `migrations` (schema, SQL in `migrations/*.sql`),
//! `store` (`PgStore`, `impl Store`), `frames` (the journal as rows of frames), `tls`,
//! `tlog` (the transparency log's shared leaves).

mod frames;
mod migrations;
mod pool;
mod store;
pub mod tlog;
mod tls;

use proof_store::StoreError;

pub use migrations::{Migration, MIGRATIONS};
pub use pool::{PgOptions, DEFAULT_CONNECT_TIMEOUT};
pub use store::PgStore;
pub use tls::{split_url, SslMode, TlsSettings};

/// True if `spec` names a PostgreSQL store (`postgres://` or `postgresql://`).
pub fn is_pg_url(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// `url` with the password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    match auth {
        Some(a) => match a.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{a}@{host}"),
        },
        None => url.to_string(),
    }
}

/// A PostgreSQL error as one line: the server's message (and SQLSTATE) when it sent one,
/// else the client's error and its cause.
fn describe(e: &postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", d.message(), d.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn db(context: impl Into<String>) -> impl FnOnce(postgres::Error) -> StoreError {
    let context = context.into();
    move |e| StoreError::Database {
        context,
        source: describe(&e).into(),
    }
}

fn i(v: u64) -> i64 {
    v as i64
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "t_1"),
            "postgres://u:p@h:1/t_1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert!(is_pg_url("postgresql://h/db") && !is_pg_url("/var/lib/proof"));
    }
}
