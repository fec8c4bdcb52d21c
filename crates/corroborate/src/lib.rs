//! proof-corroborate: asks a remote executor's REAPI v2 ActionCache
//! (`GetActionResult`) about a deterministic sample of a build's remote
//! action digests, and returns the executor's raw answers as the bytes of an
//! artifact's `corroboration.bin` member. The evidence derivation
//! (`proof_evidence`) reads those bytes; nothing here is trusted by the
//! verifier beyond the raw answers it stores.
//!
//! ```no_run
//! # fn main() -> Result<(), proof_corroborate::CorroborateError> {
//! let digests = vec![proof_evidence::ActionDigest { hash: "ab…".into(), size_bytes: 142 }];
//! let bytes = proof_corroborate::corroborate_blocking(
//!     "grpc://127.0.0.1:50051", "", 16, &digests)?;
//! # let _ = bytes; Ok(()) }
//! ```

use std::time::Duration;

use proof_evidence::{sample_digests, ActionDigest};
use proof_proto::corroboration::{corroboration_record, Answer, CorroborationRecord, Header};
use proof_proto::reapi::action_cache_client::ActionCacheClient;
use proof_proto::reapi::{Digest, GetActionResultRequest};
use proof_stream::delimited::encode_varint;
use prost::Message;
use thiserror::Error;
use tonic::transport::Endpoint;

/// Per-call deadline of GetActionResult.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the executor could not be asked at all (a NOT_FOUND or other
/// per-digest status is an answer, recorded, not an error).
#[derive(Debug, Error)]
pub enum CorroborateError {
    #[error("--corroborate {0:?} is not a grpc://HOST:PORT address; TLS (grpcs://) is not supported yet")]
    BadEndpoint(String),
    #[error("cannot connect to the executor at {endpoint}: {source}; check that it is running and reachable from here")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the executor at {endpoint} cannot be reached: {status}; corroboration needs the executor the build used")]
    Unavailable {
        endpoint: String,
        status: tonic::Status,
    },
}

/// Encodes one delimited record.
fn push_record(out: &mut Vec<u8>, rec: &CorroborationRecord) {
    let body = rec.encode_to_vec();
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(&body);
}

/// The `corroboration.bin` bytes for a header and answers (used by tests to
/// build records by hand, and by [`corroborate`]).
pub fn encode_records(
    executor: &str,
    instance_name: &str,
    sample_size: u64,
    answers: Vec<Answer>,
) -> Vec<u8> {
    let mut out = Vec::new();
    push_record(
        &mut out,
        &CorroborationRecord {
            record: Some(corroboration_record::Record::Header(Header {
                executor: executor.to_string(),
                instance_name: instance_name.to_string(),
                sample_size,
            })),
        },
    );
    for a in answers {
        push_record(
            &mut out,
            &CorroborationRecord {
                record: Some(corroboration_record::Record::Answer(a)),
            },
        );
    }
    out
}

fn http_uri(endpoint: &str) -> Result<String, CorroborateError> {
    let rest = endpoint
        .strip_prefix("grpc://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| CorroborateError::BadEndpoint(endpoint.to_string()))?;
    if rest.is_empty() || rest.contains('@') || rest.contains('/') {
        return Err(CorroborateError::BadEndpoint(endpoint.to_string()));
    }
    Ok(format!("http://{rest}"))
}

/// Samples `candidates` ([`sample_digests`] with `sample_size`), asks the
/// ActionCache at `endpoint` (grpc://HOST:PORT) under `instance_name` for
/// each, and returns the `corroboration.bin` bytes: a header, then one raw
/// answer per sampled digest, in sample order. Fails only when the executor
/// cannot be reached at all (UNAVAILABLE on the first call).
pub async fn corroborate(
    endpoint: &str,
    instance_name: &str,
    sample_size: usize,
    candidates: &[ActionDigest],
) -> Result<Vec<u8>, CorroborateError> {
    let uri = http_uri(endpoint)?;
    let channel = Endpoint::from_shared(uri)
        .map_err(|_| CorroborateError::BadEndpoint(endpoint.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|source| CorroborateError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let mut client = ActionCacheClient::new(channel);
    let mut answers = Vec::new();
    for d in sample_digests(candidates, sample_size) {
        let digest = Digest {
            hash: d.hash.clone(),
            size_bytes: d.size_bytes,
        };
        let req = GetActionResultRequest {
            instance_name: instance_name.to_string(),
            action_digest: Some(digest.clone()),
            ..Default::default()
        };
        let answer = match client.get_action_result(req).await {
            Ok(resp) => Answer {
                action_digest: Some(digest),
                status_code: 0,
                status_message: String::new(),
                action_result: resp.into_inner().encode_to_vec(),
            },
            Err(status) if status.code() == tonic::Code::Unavailable && answers.is_empty() => {
                return Err(CorroborateError::Unavailable {
                    endpoint: endpoint.to_string(),
                    status,
                });
            }
            Err(status) => Answer {
                action_digest: Some(digest),
                status_code: status.code() as i32,
                status_message: status.message().to_string(),
                action_result: Vec::new(),
            },
        };
        answers.push(answer);
    }
    Ok(encode_records(
        endpoint,
        instance_name,
        sample_size as u64,
        answers,
    ))
}

/// [`corroborate`] on a fresh current-thread runtime.
pub fn corroborate_blocking(
    endpoint: &str,
    instance_name: &str,
    sample_size: usize,
    candidates: &[ActionDigest],
) -> Result<Vec<u8>, CorroborateError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CorroborateError::Runtime)?
        .block_on(corroborate(
            endpoint,
            instance_name,
            sample_size,
            candidates,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_grpc_endpoints() {
        assert_eq!(
            http_uri("grpc://127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        for bad in [
            "grpcs://h:1",
            "127.0.0.1:1",
            "grpc://",
            "grpc://u:p@h:1",
            "grpc://h:1/x",
        ] {
            assert!(
                matches!(http_uri(bad), Err(CorroborateError::BadEndpoint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_unreachable_executor_is_an_error_naming_it() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ep = format!("grpc://127.0.0.1:{port}");
        let d = ActionDigest {
            hash: "a".repeat(64),
            size_bytes: 1,
        };
        let err = corroborate_blocking(&ep, "", 16, &[d])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&ep), "{err}");
    }
}
