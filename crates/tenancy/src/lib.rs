//! Tenants of an rbe-proof server and the decisions that keep them apart.
//!
//! Pure: the tenants file is parsed from a string the caller read, every
//! decision is a function of its arguments, and the quota book takes `now`
//! as a parameter. The BES backend (`proof-server`) calls these at ingest; the
//! HTTP API uses [`Tenants::authenticate`] to scope reads. See `docs/tenants.md`.
//!
//! ```
//! use proof_tenancy::{hash_token, Tenants};
//! let file = format!(r#"
//! [[tenant]]
//! id = "spoke-a"
//! lane = "trusted-writer"
//! tokens_sha256 = ["{}"]
//! bes_instance_names = ["spoke-a"]
//! remote_instance_names = [""]
//! pools = ["*"]
//! "#, hash_token("s3cret"));
//! let tenants = Tenants::parse(&file).unwrap();
//! let t = tenants.authenticate(Some("Bearer s3cret")).unwrap();
//! assert_eq!(t.id, "spoke-a");
//! assert!(t.check_bes_instance("spoke-b").is_err());
//! ```

mod config;
mod denial;
mod options;
mod quota;

pub use config::{Allowed, ConfigError, Lane, Quota, Tenant, Tenants};
pub use denial::{Code, Denial, Reason, ERROR_DOMAIN};
pub use options::{command_options, CommandOptions, OptionsSource};
pub use quota::{QuotaBook, StreamTicket};

use sha2::{Digest, Sha256};

/// The form a token is stored in: lowercase hex of its SHA-256.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
