//! The write-posture probe (`proof probe-ac`): with a lane's credentials,
//! try to write a harmless canary ActionCache entry and read it back.
//!
//! The canary's action digest is the SHA-256 of [`CANARY_PREFIX`] and a
//! nonce. The prefix starts with a zero byte, which is never the first byte
//! of a serialized `Action` (a protobuf tag of field number 0 is invalid),
//! so no build can ever ask for the canary's digest short of a SHA-256
//! preimage. Its result names no outputs: an executor that accepts it
//! serves nothing that could reach a build.

use proof_proto::reapi::{ActionResult, Digest, ExecutedActionMetadata};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The first bytes of every canary preimage.
pub const CANARY_PREFIX: &[u8] = b"\0rbe-proof AC write-posture canary v1\0";
/// The worker name the canary result carries.
pub const CANARY_WORKER: &str = "rbe-proof-ac-probe-canary";
/// The in-toto predicate type of a signed probe result.
pub const PROBE_PREDICATE_TYPE: &str = "https://rbe-proof.dev/ac-write-probe/v1";

/// gRPC status codes used here.
pub mod code {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAUTHENTICATED: i32 = 16;

    pub fn name(c: i32) -> &'static str {
        match c {
            0 => "OK",
            1 => "CANCELLED",
            2 => "UNKNOWN",
            3 => "INVALID_ARGUMENT",
            4 => "DEADLINE_EXCEEDED",
            5 => "NOT_FOUND",
            6 => "ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "RESOURCE_EXHAUSTED",
            9 => "FAILED_PRECONDITION",
            10 => "ABORTED",
            11 => "OUT_OF_RANGE",
            12 => "UNIMPLEMENTED",
            13 => "INTERNAL",
            14 => "UNAVAILABLE",
            15 => "DATA_LOSS",
            16 => "UNAUTHENTICATED",
            _ => "UNKNOWN_CODE",
        }
    }
}

/// The canary's preimage for `nonce`.
pub fn canary_preimage(nonce: &str) -> Vec<u8> {
    let mut v = CANARY_PREFIX.to_vec();
    v.extend_from_slice(nonce.as_bytes());
    v
}

/// The canary's action digest for `nonce`.
pub fn canary_digest(nonce: &str) -> Digest {
    let pre = canary_preimage(nonce);
    Digest {
        hash: hex::encode(sha2::Sha256::digest(&pre)),
        size_bytes: pre.len() as i64,
    }
}

/// The canary's ActionResult: exit code 0 (an executor that caches only
/// successful results still takes it), no outputs.
pub fn canary_result() -> ActionResult {
    ActionResult {
        exit_code: 0,
        execution_metadata: Some(ExecutedActionMetadata {
            worker: CANARY_WORKER.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The write posture the probe observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Posture {
    /// The write was refused and the canary is not there: read-only holds.
    ReadOnly,
    /// The write was accepted, or the canary is there: the lane can write.
    Writable,
    /// Neither (the executor unreachable, or another error).
    Inconclusive,
}

impl Posture {
    pub fn as_str(self) -> &'static str {
        match self {
            Posture::ReadOnly => "read-only",
            Posture::Writable => "writable",
            Posture::Inconclusive => "inconclusive",
        }
    }
}

/// What reading the canary back answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readback {
    /// The canary is served (with our worker name or not).
    Found {
        worker: String,
    },
    NotFound,
    /// Another status.
    Error {
        code: i32,
        message: String,
    },
}

/// The probe's record: what is signed and shown in `proof report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub executor: String,
    pub instance_name: String,
    /// The names (never the values) of the headers sent as the lane's
    /// credentials.
    pub header_names: Vec<String>,
    /// `HASH/SIZE` of the canary action.
    pub canary_digest: String,
    pub write_code: i32,
    pub write_status: String,
    pub write_message: String,
    pub readback: Readback,
    pub posture: Posture,
    /// Read-only held.
    pub passed: bool,
    /// RFC 3339.
    pub probed_at: String,
    /// One sentence.
    pub detail: String,
}

/// The posture shown by a write answered `write_code` and a read-back.
pub fn classify(write_code: i32, readback: &Readback) -> (Posture, String) {
    let status = code::name(write_code);
    match (write_code, readback) {
        (_, Readback::Found { worker }) => (
            Posture::Writable,
            format!(
                "the canary entry is served after the write (answered {status}; writer {worker:?}): this lane can write the action cache"
            ),
        ),
        (code::OK, _) => (
            Posture::Writable,
            "UpdateActionResult answered OK: this lane can write the action cache".to_string(),
        ),
        (code::PERMISSION_DENIED | code::UNAUTHENTICATED | code::UNIMPLEMENTED, Readback::NotFound) => (
            Posture::ReadOnly,
            format!("UpdateActionResult was refused ({status}) and the canary is not served: read-only holds"),
        ),
        (code::PERMISSION_DENIED | code::UNAUTHENTICATED | code::UNIMPLEMENTED, Readback::Error { code, message }) => (
            Posture::Inconclusive,
            format!(
                "UpdateActionResult was refused ({status}) but reading the canary back answered {} ({message}): cannot tell whether it was written",
                code::name(*code)
            ),
        ),
        (_, _) => (
            Posture::Inconclusive,
            format!("UpdateActionResult answered {status}: neither a write nor a refusal"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_canary_is_never_an_action() {
        for nonce in ["", "a", "x-123-456"] {
            let pre = canary_preimage(nonce);
            assert!(
                proof_proto::reapi::Action::decode(pre.as_slice()).is_err(),
                "{nonce}"
            );
            let d = canary_digest(nonce);
            assert_eq!(d.hash.len(), 64);
            assert_eq!(d.size_bytes as usize, pre.len());
        }
        assert_ne!(canary_digest("a"), canary_digest("b"));
        assert!(canary_result().output_files.is_empty());
    }

    #[test]
    fn postures() {
        let found = Readback::Found {
            worker: CANARY_WORKER.into(),
        };
        assert_eq!(classify(0, &found).0, Posture::Writable);
        assert_eq!(classify(0, &Readback::NotFound).0, Posture::Writable);
        for c in [7, 16, 12] {
            assert_eq!(classify(c, &Readback::NotFound).0, Posture::ReadOnly);
            // Refused, yet written: the refusal is not what counts.
            assert_eq!(classify(c, &found).0, Posture::Writable);
        }
        assert_eq!(classify(14, &Readback::NotFound).0, Posture::Inconclusive);
        assert_eq!(
            classify(
                7,
                &Readback::Error {
                    code: 14,
                    message: "down".into()
                }
            )
            .0,
            Posture::Inconclusive
        );
    }
}
