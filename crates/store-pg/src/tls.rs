//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert` URL parameters, through
//! `postgres-native-tls` (OpenSSL on Linux).
//!
//! | `sslmode` | encrypted | certificate chain checked | host name checked |
//! | --- | --- | --- | --- |
//! | `disable`, absent | no | - | - |
//! | `prefer` | if the server offers TLS | no | no |
//! | `require` | yes, or refused | only if `sslrootcert` is given (then as `verify-ca`) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! `sslrootcert=FILE` (PEM, one or more certificates) is then the only trust anchor; without
//! it the system's roots are used. `tokio-postgres` knows only disable/prefer/require, so the
//! URL handed to it carries one of those, and the checks are the connector's.

use std::path::PathBuf;

use postgres_native_tls::MakeTlsConnector;
use proof_store::StoreError;

/// What the URL asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// How connections are made.
#[derive(Clone)]
pub(crate) enum Connector {
    Plain,
    Tls(MakeTlsConnector),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connector::Plain => "Plain",
            Connector::Tls(_) => "Tls",
        })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `sslmode` and `sslrootcert` off `url`: returns the URL for `tokio-postgres`
/// (with `sslmode` disable/prefer/require) and what the connector must check.
pub fn split_url(url: &str) -> Result<(String, TlsSettings), StoreError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => {
                mode = Some(SslMode::parse(&percent_decode(v)).ok_or_else(|| {
                    StoreError::Schema(format!(
                        "unknown sslmode={v:?} in the store URL; use disable, prefer, require, verify-ca or verify-full"
                    ))
                })?)
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(v))),
            _ => rest.push(kv),
        }
    }
    let mode = mode.unwrap_or(SslMode::Disable);
    if root_cert.is_some() && mode == SslMode::Disable {
        return Err(StoreError::Schema(
            "the store URL names sslrootcert but no sslmode: add sslmode=verify-full (or verify-ca, require)".into(),
        ));
    }
    let wire = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    rest.push(match wire {
        "disable" => "sslmode=disable",
        "prefer" => "sslmode=prefer",
        _ => "sslmode=require",
    });
    Ok((
        format!("{base}?{}", rest.join("&")),
        TlsSettings { mode, root_cert },
    ))
}

impl TlsSettings {
    /// `sslmode=require` with a root certificate checks the chain, as libpq does.
    fn checks_chain(&self) -> bool {
        matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (self.mode == SslMode::Require && self.root_cert.is_some())
    }

    pub(crate) fn connector(&self) -> Result<Connector, StoreError> {
        if self.mode == SslMode::Disable {
            return Ok(Connector::Plain);
        }
        let mut b = native_tls::TlsConnector::builder();
        if !self.checks_chain() {
            // prefer/require without a root certificate: encrypted, not authenticated.
            b.danger_accept_invalid_certs(true);
        }
        if self.mode != SslMode::VerifyFull {
            b.danger_accept_invalid_hostnames(true);
        }
        if let Some(path) = &self.root_cert {
            let pem = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
                context: format!(
                    "reading sslrootcert={} (the CA certificate(s) the PostgreSQL server's certificate must be signed by, PEM)",
                    path.display()
                ),
                source,
            })?;
            let mut n = 0;
            for block in pem.split_inclusive("-----END CERTIFICATE-----") {
                let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else {
                    continue;
                };
                let cert =
                    native_tls::Certificate::from_pem(&block.as_bytes()[start..]).map_err(|e| {
                        StoreError::Schema(format!(
                            "sslrootcert={}: certificate {} is not a PEM certificate: {e}",
                            path.display(),
                            n + 1
                        ))
                    })?;
                b.add_root_certificate(cert);
                n += 1;
            }
            if n == 0 {
                return Err(StoreError::Schema(format!(
                    "sslrootcert={} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                )));
            }
            // The file is the trust anchor, as with libpq.
            b.disable_built_in_roots(true);
        }
        let c = b
            .build()
            .map_err(|e| StoreError::Schema(format!("cannot set up TLS for PostgreSQL: {e}")))?;
        Ok(Connector::Tls(MakeTlsConnector::new(c)))
    }

    /// A failed connection's message with what to do about TLS causes.
    pub(crate) fn explain(&self, host: &str, msg: &str) -> String {
        let root = self
            .root_cert
            .as_ref()
            .map_or("the system's CA roots".to_string(), |p| {
                format!("sslrootcert={}", p.display())
            });
        let lower = msg.to_ascii_lowercase();
        if lower.contains("hostname mismatch") || lower.contains("ip address mismatch") {
            format!(
                "{msg}; the PostgreSQL server's TLS certificate does not name the host {host:?} \
                 (sslmode=verify-full checks it): connect by a name or address the certificate \
                 carries, or use sslmode=verify-ca"
            )
        } else if lower.contains("certificate verify failed")
            || lower.contains("self-signed")
            || lower.contains("unable to get local issuer")
        {
            format!(
                "{msg}; the PostgreSQL server's TLS certificate is not signed by a CA in {root} \
                 (sslmode={}): check sslrootcert= in the store URL",
                self.mode.as_str()
            )
        } else if lower.contains("server does not support tls") {
            format!(
                "{msg}; sslmode={} needs TLS but the PostgreSQL server at {host:?} does not \
                 offer it (ssl = off): enable ssl on the server, or use sslmode=disable on a \
                 trusted network",
                self.mode.as_str()
            )
        } else {
            msg.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split() {
        let (u, t) = split_url("postgres://u@h:1/db").unwrap();
        assert_eq!(u, "postgres://u@h:1/db?sslmode=disable");
        assert_eq!(t.mode, SslMode::Disable);
        let (u, t) = split_url(
            "postgres://u@h:1/db?application_name=x&sslmode=verify-full&sslrootcert=/a%20b/ca.crt",
        )
        .unwrap();
        assert_eq!(u, "postgres://u@h:1/db?application_name=x&sslmode=require");
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/a b/ca.crt")));
        let (u, t) = split_url("postgres://u@h/db?sslmode=prefer").unwrap();
        assert_eq!(
            (u.as_str(), t.mode),
            ("postgres://u@h/db?sslmode=prefer", SslMode::Prefer)
        );
        let e = split_url("postgres://u@h/db?sslmode=allow-maybe").unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");
        assert!(split_url("postgres://u@h/db?sslrootcert=/ca.crt").is_err());
        // require with a root certificate checks the chain (libpq's rule).
        let t = split_url("postgres://h/d?sslmode=require&sslrootcert=/x")
            .unwrap()
            .1;
        assert!(t.checks_chain());
        assert!(!split_url("postgres://h/d?sslmode=require")
            .unwrap()
            .1
            .checks_chain());
    }
}
