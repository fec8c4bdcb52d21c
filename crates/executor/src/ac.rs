//! The executor's ActionCache, for the AC audit and the write-posture
//! probe: `GetActionResult` for many entries with bounded concurrency, and
//! `UpdateActionResult` of a canary entry (or, in tests, of a rewrite).
//!
//! Bounds: one answer is at most [`MAX_AC_ANSWER`] bytes (a larger or
//! undecodable one is recorded as unusable, never held or retried), one
//! call at most [`AcClient::call_timeout`]; an unreachable executor fails
//! the whole run (`LedgerError::Unreachable`) rather than recording each
//! entry as unreachable one by one.

use std::time::Duration;

use futures::StreamExt;
use proof_acaudit::probe::{canary_digest, canary_result, code, Readback};
use proof_acaudit::Current;
use proof_proto::reapi::action_cache_client::ActionCacheClient;
use proof_proto::reapi::{ActionResult, Digest, GetActionResultRequest, UpdateActionResultRequest};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::LedgerError;

/// Largest GetActionResult answer accepted.
pub const MAX_AC_ANSWER: usize = 4 * 1024 * 1024;

/// One entry to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcAsk {
    pub instance_name: String,
    pub digest: Digest,
}

/// `HASH/SIZE` as a REAPI digest.
pub fn parse_digest(s: &str) -> Option<Digest> {
    let (hash, size) = s.split_once('/')?;
    Some(Digest {
        hash: hash.to_string(),
        size_bytes: size.parse().ok()?,
    })
}

/// An ActionCache client of one executor, sending `headers` (a lane's
/// credentials) with every call.
#[derive(Debug, Clone)]
pub struct AcClient {
    endpoint: String,
    uri: String,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// Per-call deadline.
    pub call_timeout: Duration,
    /// Connect deadline.
    pub connect_timeout: Duration,
}

impl AcClient {
    /// `endpoint` is grpc://HOST:PORT; each header is `NAME: VALUE` (or
    /// `NAME=VALUE`).
    pub fn new(endpoint: &str, headers: &[String]) -> Result<Self, LedgerError> {
        let uri = crate::http_uri(endpoint)?;
        let mut hs = Vec::new();
        for h in headers {
            let (k, v) = h
                .split_once(':')
                .or_else(|| h.split_once('='))
                .ok_or_else(|| LedgerError::BadHeader(h.clone()))?;
            let key = AsciiMetadataKey::from_bytes(k.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| LedgerError::BadHeader(h.clone()))?;
            let value = AsciiMetadataValue::try_from(v.trim())
                .map_err(|_| LedgerError::BadHeader(h.clone()))?;
            hs.push((key, value));
        }
        Ok(AcClient {
            endpoint: endpoint.to_string(),
            uri,
            headers: hs,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The header names sent (never their values).
    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(k, _)| k.to_string()).collect()
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> LedgerError {
        LedgerError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: reason.to_string(),
        }
    }

    async fn connect(&self) -> Result<ActionCacheClient<Channel>, LedgerError> {
        let channel = Endpoint::from_shared(self.uri.clone())
            .map_err(|_| LedgerError::BadEndpoint(self.endpoint.clone()))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.call_timeout)
            .connect()
            .await
            .map_err(|e| self.unreachable(format!("cannot connect: {e}")))?;
        Ok(ActionCacheClient::new(channel).max_decoding_message_size(MAX_AC_ANSWER))
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        for (k, v) in &self.headers {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        req.set_timeout(self.call_timeout);
        req
    }

    async fn get(
        &self,
        client: &mut ActionCacheClient<Channel>,
        ask: &AcAsk,
    ) -> Result<ActionResult, tonic::Status> {
        let req = self.request(GetActionResultRequest {
            instance_name: ask.instance_name.clone(),
            action_digest: Some(ask.digest.clone()),
            ..Default::default()
        });
        match tokio::time::timeout(
            self.call_timeout + Duration::from_secs(1),
            client.get_action_result(req),
        )
        .await
        {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {} s",
                self.call_timeout.as_secs_f64()
            ))),
        }
    }

    /// The current entry of every `asks` (in order), at most `concurrency`
    /// calls at a time; `progress(done, total)` after each answer.
    pub async fn get_many(
        &self,
        asks: &[AcAsk],
        concurrency: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<Current>, LedgerError> {
        let client = self.connect().await?;
        let total = asks.len();
        let mut out: Vec<Option<Current>> = vec![None; total];
        let calls: Vec<_> = asks
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, ask)| {
                let mut c = client.clone();
                Box::pin(async move { (i, self.get(&mut c, &ask).await) })
            })
            .collect();
        let mut answers = futures::stream::iter(calls).buffer_unordered(concurrency.max(1));
        let mut done = 0;
        while let Some((i, answer)) = answers.next().await {
            out[i] = Some(match answer {
                Ok(r) => Current::Found(Box::new(r)),
                Err(s) if s.code() == tonic::Code::NotFound => Current::NotFound,
                Err(s) => Current::Unusable(format!(
                    "GetActionResult on instance {:?} answered {:?}: {}",
                    asks[i].instance_name,
                    s.code(),
                    truncate(s.message(), 300)
                )),
            });
            done += 1;
            progress(done, total);
        }
        Ok(out
            .into_iter()
            .map(|c| c.unwrap_or_else(|| Current::Unusable("not asked".into())))
            .collect())
    }

    /// `UpdateActionResult(instance, digest, result)`: the status code and
    /// message of the answer (0 and "" when written).
    pub async fn update(
        &self,
        instance_name: &str,
        digest: &Digest,
        result: &ActionResult,
    ) -> Result<(i32, String), LedgerError> {
        let mut client = self.connect().await?;
        let req = self.request(UpdateActionResultRequest {
            instance_name: instance_name.to_string(),
            action_digest: Some(digest.clone()),
            action_result: Some(result.clone()),
            ..Default::default()
        });
        Ok(match client.update_action_result(req).await {
            Ok(_) => (code::OK, String::new()),
            Err(s) => (s.code() as i32, truncate(s.message(), 300)),
        })
    }

    /// Writes the canary entry for `nonce` under `instance_name`, then
    /// reads it back: (write code, write message, read-back).
    pub async fn probe(
        &self,
        instance_name: &str,
        nonce: &str,
    ) -> Result<(i32, String, Readback), LedgerError> {
        let digest = canary_digest(nonce);
        let (wcode, wmsg) = self
            .update(instance_name, &digest, &canary_result())
            .await?;
        let mut client = self.connect().await?;
        let ask = AcAsk {
            instance_name: instance_name.to_string(),
            digest,
        };
        let readback = match self.get(&mut client, &ask).await {
            Ok(r) => Readback::Found {
                worker: r.execution_metadata.map(|m| m.worker).unwrap_or_default(),
            },
            Err(s) if s.code() == tonic::Code::NotFound => Readback::NotFound,
            Err(s) => Readback::Error {
                code: s.code() as i32,
                message: truncate(s.message(), 300),
            },
        };
        Ok((wcode, wmsg, readback))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own
/// (callers may be inside an async runtime).
pub fn block_on<T: Send>(
    f: impl std::future::Future<Output = Result<T, LedgerError>> + Send,
) -> Result<T, LedgerError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| LedgerError::Runtime(e.to_string()))?
                .block_on(f)
        })
        .join()
        .unwrap_or_else(|_| Err(LedgerError::Runtime("the AC thread panicked".into())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_digests_parse() {
        let c = AcClient::new(
            "grpc://127.0.0.1:1",
            &["authorization: Bearer abc".into(), "x-lane=pr".into()],
        )
        .unwrap();
        assert_eq!(c.header_names(), ["authorization", "x-lane"]);
        assert!(matches!(
            AcClient::new("grpc://127.0.0.1:1", &["nocolon".into()]),
            Err(LedgerError::BadHeader(_))
        ));
        assert_eq!(
            parse_digest("ab/12"),
            Some(Digest {
                hash: "ab".into(),
                size_bytes: 12
            })
        );
        assert_eq!(parse_digest("ab"), None);
    }

    #[test]
    fn an_unreachable_executor_fails_the_run() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = AcClient::new(&format!("grpc://127.0.0.1:{port}"), &[]).unwrap();
        let asks = [AcAsk {
            instance_name: String::new(),
            digest: parse_digest("ab/1").unwrap(),
        }];
        fn quiet(_: usize, _: usize) {}
        let r = block_on(c.get_many(&asks, 4, &quiet));
        let Err(e) = r else { panic!("{r:?}") };
        assert!(e.to_string().contains("cannot be reached"), "{e}");
    }
}
