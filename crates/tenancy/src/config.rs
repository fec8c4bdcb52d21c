//! The tenants file and the per-tenant checks.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use thiserror::Error;

use crate::denial::{Denial, Reason};
use crate::options::CommandOptions;

/// Why a tenants file was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("the tenants file is not valid TOML for rbe-proof: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("the tenants file lists no [[tenant]]; add at least one or run `proof serve` without --tenants")]
    NoTenants,
    #[error("tenant id {id:?} is invalid: {why}")]
    BadId { id: String, why: &'static str },
    #[error("tenant {0:?} is listed twice; tenant ids must be unique")]
    DuplicateId(String),
    #[error("tenant {tenant:?}: tokens_sha256 entry {value:?} is not 64 lowercase hex digits; print it with `proof tenants hash-token`")]
    BadHash { tenant: String, value: String },
    #[error("tenant {tenant:?}: a token hash is also held by tenant {other:?}; every token must name exactly one tenant")]
    SharedToken { tenant: String, other: String },
    #[error("tenant {tenant:?} has no tokens_sha256; it could never authenticate")]
    NoTokens { tenant: String },
    #[error("tenant {tenant:?}: {field} is empty; list the allowed values (\"\" = not set, \"*\" = any)")]
    EmptyList { tenant: String, field: &'static str },
    #[error("tenant {tenant:?}: quota.{field} is 0; leave it out for the default, or give a positive limit")]
    ZeroQuota { tenant: String, field: &'static str },
}

/// What a tenant's streams may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// May stream builds that upload to the cache; their proofs are trusted.
    TrustedWriter,
    /// Pull-request builds: streams are only accepted when the build does not
    /// upload local results (`--noremote_upload_local_results`).
    PrReadOnly,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::TrustedWriter => "trusted-writer",
            Lane::PrReadOnly => "pr-read-only",
        }
    }
}

/// A list of allowed values: `""` allows "not set", `"*"` allows anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed(BTreeSet<String>);

impl Allowed {
    pub fn allows(&self, value: &str) -> bool {
        self.0.contains("*") || self.0.contains(value)
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|v| match v.as_str() {
                "" => "\"\" (not set)".to_string(),
                v => format!("{v:?}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Limits per tenant. Defaults: 16 streams, 600 invocations/hour, 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// Open BES tool-event RPCs at once.
    pub concurrent_streams: u32,
    /// New invocations admitted in any sliding hour.
    pub invocations_per_hour: u32,
    /// Sum of stored event payload bytes of one invocation.
    pub bytes_per_invocation: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            concurrent_streams: 16,
            invocations_per_hour: 600,
            bytes_per_invocation: 4 << 30,
        }
    }
}

/// One tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub lane: Lane,
    /// `--bes_instance_name` values (BES `project_id`).
    pub bes_instance_names: Allowed,
    /// `--remote_instance_name` values.
    pub remote_instance_names: Allowed,
    /// Exec property `Pool` values.
    pub pools: Allowed,
    pub quota: Quota,
    /// Spoke repositories (`owner/name`, as the build's `REPO` metadata
    /// names them) whose target classes this tenant's proofs may promote.
    pub repos: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    tenant: Vec<TenantToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantToml {
    id: String,
    lane: Lane,
    tokens_sha256: Vec<String>,
    bes_instance_names: Vec<String>,
    remote_instance_names: Vec<String>,
    pools: Vec<String>,
    #[serde(default)]
    quota: Quota,
    #[serde(default)]
    repos: Vec<String>,
}

/// Every tenant of a server, with the token index.
#[derive(Debug, Clone)]
pub struct Tenants {
    tenants: Vec<Tenant>,
    /// sha256 hex → index in `tenants`.
    by_hash: HashMap<String, usize>,
}

impl Tenants {
    /// Parses and checks a tenants file (see `docs/tenants.md`).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file: FileToml = toml::from_str(text)?;
        if file.tenant.is_empty() {
            return Err(ConfigError::NoTenants);
        }
        let mut tenants = Vec::new();
        let mut by_hash: HashMap<String, usize> = HashMap::new();
        for t in file.tenant {
            check_id(&t.id)?;
            if tenants.iter().any(|x: &Tenant| x.id == t.id) {
                return Err(ConfigError::DuplicateId(t.id));
            }
            if t.tokens_sha256.is_empty() {
                return Err(ConfigError::NoTokens { tenant: t.id });
            }
            for h in &t.tokens_sha256 {
                let ok = h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !ok {
                    return Err(ConfigError::BadHash {
                        tenant: t.id,
                        value: h.clone(),
                    });
                }
                if let Some(&other) = by_hash.get(h) {
                    let other: &Tenant = &tenants[other];
                    if other.id != t.id {
                        return Err(ConfigError::SharedToken {
                            tenant: t.id,
                            other: other.id.clone(),
                        });
                    }
                }
                by_hash.insert(h.clone(), tenants.len());
            }
            let list = |v: Vec<String>, field| {
                if v.is_empty() {
                    Err(ConfigError::EmptyList {
                        tenant: t.id.clone(),
                        field,
                    })
                } else {
                    Ok(Allowed(v.into_iter().collect()))
                }
            };
            let bes = list(t.bes_instance_names, "bes_instance_names")?;
            let remote = list(t.remote_instance_names, "remote_instance_names")?;
            let pools = list(t.pools, "pools")?;
            for (v, field) in [
                (t.quota.concurrent_streams as u64, "concurrent_streams"),
                (t.quota.invocations_per_hour as u64, "invocations_per_hour"),
                (t.quota.bytes_per_invocation, "bytes_per_invocation"),
            ] {
                if v == 0 {
                    return Err(ConfigError::ZeroQuota {
                        tenant: t.id.clone(),
                        field,
                    });
                }
            }
            tenants.push(Tenant {
                id: t.id,
                lane: t.lane,
                bes_instance_names: bes,
                remote_instance_names: remote,
                pools,
                quota: t.quota,
                repos: t.repos,
            });
        }
        Ok(Tenants { tenants, by_hash })
    }

    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    pub fn get(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// Whether the tenant `id` owns the spoke repository `repo` (listed in
    /// its `repos`), and if not, why not.
    pub fn check_owner(&self, id: &str, repo: &str) -> Result<(), String> {
        let Some(t) = self.get(id) else {
            return Err(format!(
                "the proof was submitted by tenant {id:?}, which is not in the tenants file"
            ));
        };
        if t.repos.iter().any(|r| r == repo) {
            Ok(())
        } else {
            Err(format!(
                "the proof was submitted by tenant {id:?}, which does not own repo {repo} (its repos: [{}]); only the tenant listing {repo} in the tenants file may promote its classes",
                t.repos.join(", ")
            ))
        }
    }

    /// The tenant an `authorization` header value (`Bearer TOKEN`) names.
    /// The token is hashed before the look-up, so the comparison never
    /// touches the secret.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&Tenant, Denial> {
        let missing = || {
            Denial::new(
                Reason::CredentialMissing,
                "this rbe-proof server requires a tenant token: run Bazel with --bes_header=Authorization=Bearer <token> (Bazel 4.x has no --bes_header and does not send --remote_header to the BES: use a header-adding proxy, see docs/tenants.md)",
            )
        };
        let value = authorization.map(str::trim).ok_or_else(missing)?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(missing)?;
        let hash = crate::hash_token(token);
        self.by_hash
            .get(&hash)
            .map(|&i| &self.tenants[i])
            .ok_or_else(|| {
                Denial::new(
                    Reason::CredentialUnknown,
                    "the bearer token is not known to this rbe-proof server; ask its operator for your tenant's token (tokens are listed by their sha256 in the tenants file)",
                )
                .with("token_sha256_prefix", &hash[..8])
            })
    }
}

fn check_id(id: &str) -> Result<(), ConfigError> {
    let why = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > 64 {
        Some("it is longer than 64 characters")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("use only [A-Za-z0-9._-]")
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::BadId { id: id.into(), why }),
        None => Ok(()),
    }
}

impl Tenant {
    fn deny(&self, reason: Reason, message: String) -> Denial {
        Denial::new(reason, message).with("tenant", &self.id)
    }

    /// Checks the BES `project_id` (`--bes_instance_name`; "" when not set).
    pub fn check_bes_instance(&self, project_id: &str) -> Result<(), Denial> {
        if self.bes_instance_names.allows(project_id) {
            return Ok(());
        }
        Err(self
            .deny(
                Reason::BesInstanceNotAllowed,
                format!(
                    "tenant {} may not use --bes_instance_name={project_id:?}; allowed: {}",
                    self.id,
                    self.bes_instance_names.describe()
                ),
            )
            .with("bes_instance_name", project_id))
    }

    /// Checks the effective options of a canonical command line / OptionsParsed.
    pub fn check_options(&self, o: &CommandOptions) -> Result<(), Denial> {
        if !self.remote_instance_names.allows(&o.remote_instance_name) {
            return Err(self
                .deny(
                    Reason::RemoteInstanceNotAllowed,
                    format!(
                        "tenant {} may not use --remote_instance_name={:?} (from the {}); allowed: {}",
                        self.id,
                        o.remote_instance_name,
                        o.source.as_str(),
                        self.remote_instance_names.describe()
                    ),
                )
                .with("remote_instance_name", &o.remote_instance_name));
        }
        if !self.pools.allows(&o.pool) {
            return Err(self
                .deny(
                    Reason::PoolNotAllowed,
                    format!(
                        "tenant {} may not use the executor pool {:?} (exec property Pool, from the {}); allowed: {}",
                        self.id,
                        o.pool,
                        o.source.as_str(),
                        self.pools.describe()
                    ),
                )
                .with("pool", &o.pool));
        }
        if self.lane == Lane::PrReadOnly && o.remote_upload_local_results {
            return Err(self
                .deny(
                    Reason::LaneReadOnly,
                    format!(
                        "tenant {} is in the pr-read-only lane: its builds must not write to the cache; add --noremote_upload_local_results",
                        self.id
                    ),
                )
                .with("lane", self.lane.as_str()));
        }
        Ok(())
    }

    /// Checks the stored size of an invocation after a batch would be added.
    pub fn check_bytes(&self, bytes_after: u64) -> Result<(), Denial> {
        let limit = self.quota.bytes_per_invocation;
        if bytes_after <= limit {
            return Ok(());
        }
        Err(self
            .deny(
                Reason::InvocationBytesExceeded,
                format!(
                    "tenant {}'s invocation would hold {bytes_after} bytes of events, over its quota of {limit} bytes; the invocation was discarded",
                    self.id
                ),
            )
            .with("limit", limit.to_string()))
    }

    /// The denial of a stream that did not carry its canonical command line
    /// within its first `events` events (`at_end`: the stream ended first).
    pub fn command_line_missing(&self, events: usize, at_end: bool) -> Denial {
        let when = if at_end {
            "before the stream ended".to_string()
        } else {
            format!("within its first {events} events")
        };
        self.deny(
            Reason::CommandLineMissing,
            format!(
                "tenant {}'s stream did not carry its canonical command line (structured_command_line labelled \"canonical\") {when}; nothing was stored. Bazel sends it at the start of every build: stream with an unmodified Bazel",
                self.id
            ),
        )
        .with("events", events.to_string())
    }

    /// Checks that an existing invocation belongs to this tenant.
    pub fn check_owner(&self, invocation_id: &str, owner: Option<&str>) -> Result<(), Denial> {
        if owner == Some(self.id.as_str()) {
            return Ok(());
        }
        Err(self.not_owner(invocation_id))
    }

    /// The denial of a stream for an invocation this tenant does not own.
    pub fn not_owner(&self, invocation_id: &str) -> Denial {
        self
            .deny(
                Reason::InvocationOfOtherTenant,
                format!(
                    "invocation {invocation_id} was not streamed by tenant {}; a tenant may only continue its own invocations",
                    self.id
                ),
            )
            .with("invocation_id", invocation_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::OptionsSource;
    use crate::{hash_token, Code};

    fn file() -> String {
        format!(
            r#"
[[tenant]]
id = "spoke-a"
lane = "trusted-writer"
tokens_sha256 = ["{a}"]
bes_instance_names = ["spoke-a", ""]
remote_instance_names = [""]
pools = ["", "linux"]
repos = ["acme/web", "acme/api"]

[[tenant]]
id = "pr"
lane = "pr-read-only"
tokens_sha256 = ["{p}", "{p2}"]
bes_instance_names = ["*"]
remote_instance_names = ["main"]
pools = ["*"]
[tenant.quota]
concurrent_streams = 2
invocations_per_hour = 3
bytes_per_invocation = 1000
"#,
            a = hash_token("token-a"),
            p = hash_token("token-pr"),
            p2 = hash_token("token-pr-2"),
        )
    }

    fn opts(instance: &str, pool: &str, upload: bool) -> CommandOptions {
        CommandOptions {
            source: OptionsSource::CanonicalCommandLine,
            remote_instance_name: instance.into(),
            pool: pool.into(),
            remote_upload_local_results: upload,
        }
    }

    #[test]
    fn hash_token_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_tenant_owns_only_the_repos_it_lists() {
        let t = Tenants::parse(&file()).unwrap();
        assert_eq!(t.get("spoke-a").unwrap().repos, ["acme/web", "acme/api"]);
        assert!(t.check_owner("spoke-a", "acme/api").is_ok());
        let e = t.check_owner("spoke-a", "acme/other").unwrap_err();
        assert!(
            e.contains("tenant \"spoke-a\", which does not own repo acme/other"),
            "{e}"
        );
        // No repos listed: owns nothing.
        assert!(t.get("pr").unwrap().repos.is_empty());
        assert!(t.check_owner("pr", "acme/web").is_err());
        assert!(t
            .check_owner("gone", "acme/web")
            .unwrap_err()
            .contains("not in the tenants file"));
    }

    #[test]
    fn parses_with_defaults_and_explicit_quotas() {
        let t = Tenants::parse(&file()).unwrap();
        assert_eq!(t.tenants().len(), 2);
        let a = t.get("spoke-a").unwrap();
        assert_eq!(a.lane, Lane::TrustedWriter);
        assert_eq!(a.quota, Quota::default());
        let pr = t.get("pr").unwrap();
        assert_eq!(pr.lane, Lane::PrReadOnly);
        assert_eq!(pr.quota.concurrent_streams, 2);
        assert_eq!(pr.quota.bytes_per_invocation, 1000);
    }

    #[test]
    fn authenticates_by_bearer_token() {
        let t = Tenants::parse(&file()).unwrap();
        assert_eq!(
            t.authenticate(Some("Bearer token-a")).unwrap().id,
            "spoke-a"
        );
        assert_eq!(
            t.authenticate(Some("bearer  token-pr-2 ")).unwrap().id,
            "pr"
        );
        for missing in [
            None,
            Some(""),
            Some("token-a"),
            Some("Basic token-a"),
            Some("Bearer "),
        ] {
            let d = t.authenticate(missing).unwrap_err();
            assert_eq!(d.reason, Reason::CredentialMissing, "{missing:?}");
            assert_eq!(d.code(), Code::Unauthenticated);
        }
        let d = t.authenticate(Some("Bearer token-b")).unwrap_err();
        assert_eq!(d.reason, Reason::CredentialUnknown);
        assert!(!d.to_string().contains("token-b"), "{d}");
    }

    #[test]
    fn instance_names_pools_and_lanes() {
        let t = Tenants::parse(&file()).unwrap();
        let a = t.get("spoke-a").unwrap();
        assert!(a.check_bes_instance("spoke-a").is_ok());
        assert!(a.check_bes_instance("").is_ok());
        let d = a.check_bes_instance("pr").unwrap_err();
        assert_eq!(d.reason, Reason::BesInstanceNotAllowed);
        assert_eq!(d.code(), Code::PermissionDenied);
        assert_eq!(d.metadata["tenant"], "spoke-a");
        assert_eq!(d.metadata["bes_instance_name"], "pr");

        assert!(a.check_options(&opts("", "", true)).is_ok());
        assert!(a.check_options(&opts("", "linux", true)).is_ok());
        let d = a.check_options(&opts("main", "", true)).unwrap_err();
        assert_eq!(d.reason, Reason::RemoteInstanceNotAllowed);
        assert!(d.message.contains("\"main\""), "{}", d.message);
        let d = a.check_options(&opts("", "gpu", true)).unwrap_err();
        assert_eq!(d.reason, Reason::PoolNotAllowed);
        assert_eq!(d.metadata["pool"], "gpu");

        let pr = t.get("pr").unwrap();
        assert!(pr.check_bes_instance("anything").is_ok());
        assert!(pr.check_options(&opts("main", "any", false)).is_ok());
        let d = pr.check_options(&opts("main", "any", true)).unwrap_err();
        assert_eq!(d.reason, Reason::LaneReadOnly);
        assert_eq!(d.code(), Code::PermissionDenied);
        assert_eq!(
            pr.check_options(&opts("", "", false)).unwrap_err().reason,
            Reason::RemoteInstanceNotAllowed
        );
    }

    #[test]
    fn bytes_and_owner() {
        let t = Tenants::parse(&file()).unwrap();
        let pr = t.get("pr").unwrap();
        assert!(pr.check_bytes(1000).is_ok());
        let d = pr.check_bytes(1001).unwrap_err();
        assert_eq!(d.reason, Reason::InvocationBytesExceeded);
        assert_eq!(d.code(), Code::ResourceExhausted);
        assert!(pr.check_owner("i1", Some("pr")).is_ok());
        for owner in [None, Some("spoke-a")] {
            assert_eq!(
                pr.check_owner("i1", owner).unwrap_err().reason,
                Reason::InvocationOfOtherTenant
            );
        }
    }

    #[test]
    fn refuses_bad_files_with_a_precise_error() {
        let h = hash_token("x");
        let base = |extra: &str| {
            format!(
                "[[tenant]]\nid = \"a\"\nlane = \"trusted-writer\"\ntokens_sha256 = [\"{h}\"]\nbes_instance_names = [\"\"]\nremote_instance_names = [\"\"]\npools = [\"\"]\n{extra}"
            )
        };
        assert!(Tenants::parse(&base("")).is_ok());
        let err = |s: &str| Tenants::parse(s).unwrap_err().to_string();
        assert!(err("").contains("no [[tenant]]"));
        assert!(err(&base("typo = 1")).contains("typo"));
        assert!(err(&base("[tenant.quota]\nconcurrent_streams = 0")).contains("concurrent_streams"));
        assert!(err(&base("[tenant.quota]\nbytes = 5")).contains("bytes"));
        assert!(err(&base("").replace("trusted-writer", "writer")).contains("writer"));
        assert!(err(&base("").replace(&h, "ABC")).contains("64 lowercase hex"));
        assert!(err(&base("").replace("id = \"a\"", "id = \"a/b\"")).contains("invalid"));
        assert!(err(&base("").replace("pools = [\"\"]", "pools = []")).contains("pools is empty"));
        let two = format!(
            "{}\n{}",
            base(""),
            base("").replace("id = \"a\"", "id = \"b\"")
        );
        assert!(
            err(&two).contains("also held by tenant \"a\""),
            "{}",
            err(&two)
        );
        let dup = format!("{}\n{}", base(""), base(""));
        assert!(err(&dup).contains("listed twice"));
    }
}
