//! Why a stream or a request was refused, in a form the server turns into a
//! gRPC status with a `google.rpc.ErrorInfo` detail.

use std::collections::BTreeMap;
use std::fmt;

/// `ErrorInfo.domain` of every denial.
pub const ERROR_DOMAIN: &str = "rbe-proof.dev";

/// The gRPC code a denial maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    PermissionDenied,
    ResourceExhausted,
}

/// The structured reason (`ErrorInfo.reason`); stable, documented in `docs/tenants.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No `authorization: Bearer …` metadata.
    CredentialMissing,
    /// A bearer token that no tenant holds.
    CredentialUnknown,
    /// `--bes_instance_name` (BES `project_id`) not allowed for the tenant.
    BesInstanceNotAllowed,
    /// `--remote_instance_name` not allowed for the tenant.
    RemoteInstanceNotAllowed,
    /// Exec property `Pool` not allowed for the tenant.
    PoolNotAllowed,
    /// A `pr-read-only` tenant's build would upload local results to the cache.
    LaneReadOnly,
    /// The invocation id already belongs to another tenant.
    InvocationOfOtherTenant,
    /// Too many open streams for the tenant.
    ConcurrentStreamsExceeded,
    /// Too many new invocations in the last hour.
    InvocationsPerHourExceeded,
    /// The invocation's events exceed the tenant's byte quota.
    InvocationBytesExceeded,
    /// The stream did not carry its canonical command line before the
    /// server had to store or refuse it.
    CommandLineMissing,
}

impl Reason {
    /// Every reason, e.g. for metrics.
    pub const ALL: [Reason; 11] = [
        Reason::CredentialMissing,
        Reason::CredentialUnknown,
        Reason::BesInstanceNotAllowed,
        Reason::RemoteInstanceNotAllowed,
        Reason::PoolNotAllowed,
        Reason::LaneReadOnly,
        Reason::InvocationOfOtherTenant,
        Reason::ConcurrentStreamsExceeded,
        Reason::InvocationsPerHourExceeded,
        Reason::InvocationBytesExceeded,
        Reason::CommandLineMissing,
    ];

    /// The `ErrorInfo.reason` string (UPPER_SNAKE_CASE).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CredentialMissing => "CREDENTIAL_MISSING",
            Reason::CredentialUnknown => "CREDENTIAL_UNKNOWN",
            Reason::BesInstanceNotAllowed => "BES_INSTANCE_NOT_ALLOWED",
            Reason::RemoteInstanceNotAllowed => "REMOTE_INSTANCE_NOT_ALLOWED",
            Reason::PoolNotAllowed => "POOL_NOT_ALLOWED",
            Reason::LaneReadOnly => "LANE_READ_ONLY",
            Reason::InvocationOfOtherTenant => "INVOCATION_OF_OTHER_TENANT",
            Reason::ConcurrentStreamsExceeded => "CONCURRENT_STREAMS_EXCEEDED",
            Reason::InvocationsPerHourExceeded => "INVOCATIONS_PER_HOUR_EXCEEDED",
            Reason::InvocationBytesExceeded => "INVOCATION_BYTES_EXCEEDED",
            Reason::CommandLineMissing => "COMMAND_LINE_MISSING",
        }
    }

    /// The gRPC code for this reason.
    pub fn code(self) -> Code {
        match self {
            Reason::CredentialMissing | Reason::CredentialUnknown => Code::Unauthenticated,
            Reason::BesInstanceNotAllowed
            | Reason::RemoteInstanceNotAllowed
            | Reason::PoolNotAllowed
            | Reason::LaneReadOnly
            | Reason::InvocationOfOtherTenant
            | Reason::CommandLineMissing => Code::PermissionDenied,
            Reason::ConcurrentStreamsExceeded
            | Reason::InvocationsPerHourExceeded
            | Reason::InvocationBytesExceeded => Code::ResourceExhausted,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason, a message for the person reading Bazel's output,
/// and `ErrorInfo.metadata` (never a credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub message: String,
    pub metadata: BTreeMap<String, String>,
}

impl Denial {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Denial {
            reason,
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }

    pub(crate) fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_string(), value.into());
        self
    }

    pub fn code(&self) -> Code {
        self.reason.code()
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.message, self.reason)
    }
}

impl std::error::Error for Denial {}
