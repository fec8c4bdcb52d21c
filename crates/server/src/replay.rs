//! The replay client: pushes a recorded BEP stream to a BES backend the way
//! Bazel does (pipelined sends, a FIFO of unacked events, retry on a new RPC
//! re-sending every unacked event with the same sequence numbers), with
//! optional injected faults. Used by the fault tests and by operators to
//! re-send a build's events (`proof replay`).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use proof_proto::bes::{
    build_event::{
        build_component_stream_finished::FinishType, BuildComponentStreamFinished, Event,
    },
    publish_build_event_client::PublishBuildEventClient,
    stream_id::BuildComponent,
    BuildEvent, OrderedBuildEvent, PublishBuildToolEventStreamRequest, StreamId,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// Faults injected by the client.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Break the RPC (cancel it, as a dropped connection would) once this many
    /// events were sent on it, the first time each count is reached.
    pub disconnect_after: Vec<u64>,
    /// On every retry, also re-send this many events that were already acked
    /// (as if their acks had been lost).
    pub resend_acked: u64,
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub target: String,
    pub invocation_id: String,
    pub build_id: String,
    pub project_id: String,
    /// Extra request metadata (e.g. `authorization`).
    pub headers: Vec<(String, String)>,
    /// Retries after a failed RPC, like Bazel's default 4; the count resets
    /// when an attempt got at least one ack.
    pub max_retries: u32,
    pub backoff: Duration,
    pub faults: Faults,
    /// Append the ComponentStreamFinished event after the BEP events.
    pub finish: bool,
}

/// What happened.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Every sequence number acked, in ack order (re-sent events appear again).
    pub acked: Vec<u64>,
    pub rpcs: u32,
    pub events: u64,
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot reach {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "the server refused the stream with {code:?}: {message} (not retried: the code is final)"
    )]
    Refused {
        code: tonic::Code,
        message: String,
        report: ReplayReport,
    },
    #[error("gave up after {retries} retries; last status {code:?}: {message}")]
    Exhausted {
        retries: u32,
        code: tonic::Code,
        message: String,
        report: ReplayReport,
    },
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    #[error("bad target {0:?}: expected grpc://HOST:PORT")]
    BadTarget(String),
}

fn request(opts: &ReplayOptions, seq: u64, event: Event) -> PublishBuildToolEventStreamRequest {
    PublishBuildToolEventStreamRequest {
        ordered_build_event: Some(OrderedBuildEvent {
            stream_id: Some(StreamId {
                build_id: opts.build_id.clone(),
                component: BuildComponent::Tool as i32,
                invocation_id: opts.invocation_id.clone(),
            }),
            sequence_number: seq as i64,
            event: Some(BuildEvent {
                event_time: None,
                event: Some(event),
            }),
        }),
        notification_keywords: Vec::new(),
        project_id: opts.project_id.clone(),
        check_preceding_lifecycle_events_present: false,
    }
}

/// The tool-stream events for a list of serialized BEP events, numbered from 1.
pub fn tool_events(bep: impl IntoIterator<Item = Bytes>, finish: bool) -> Vec<Event> {
    let mut v: Vec<Event> = bep
        .into_iter()
        .map(|b| {
            Event::BazelEvent(prost_types::Any {
                type_url: proof_proto::BEP_EVENT_TYPE_URL.into(),
                value: b.to_vec(),
            })
        })
        .collect();
    if finish {
        v.push(Event::ComponentStreamFinished(
            BuildComponentStreamFinished {
                r#type: FinishType::Finished as i32,
            },
        ));
    }
    v
}

pub async fn connect(target: &str) -> Result<Channel, ReplayError> {
    let uri = target
        .strip_prefix("grpc://")
        .map(|rest| format!("http://{rest}"))
        .ok_or_else(|| ReplayError::BadTarget(target.to_string()))?;
    let ep = Endpoint::from_shared(uri).map_err(|_| ReplayError::BadTarget(target.to_string()))?;
    ep.connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|source| ReplayError::Connect {
            target: target.to_string(),
            source,
        })
}

/// Replays `bep` events (serialized `build_event_stream.BuildEvent`s).
pub async fn replay(bep: Vec<Bytes>, opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let events = tool_events(bep, opts.finish);
    let total = events.len() as u64;
    let mut report = ReplayReport {
        events: total,
        ..Default::default()
    };
    // Oldest unacked first; `next` is the next never-sent event (1-based).
    let mut unacked: VecDeque<u64> = VecDeque::new();
    let mut next: u64 = 1;
    let mut retries = 0u32;
    let mut disconnects: Vec<u64> = opts.faults.disconnect_after.clone();
    let mut highest_acked = 0u64;
    loop {
        report.rpcs += 1;
        let attempt = attempt(
            &events,
            opts,
            &mut unacked,
            &mut next,
            &mut disconnects,
            highest_acked,
            &mut report,
        )
        .await;
        highest_acked = report.acked.iter().copied().max().unwrap_or(0);
        match attempt {
            Ok(()) => return Ok(report),
            Err(Attempt::Final(status)) => {
                return Err(ReplayError::Refused {
                    code: status.code(),
                    message: status.message().to_string(),
                    report,
                })
            }
            Err(Attempt::Protocol(m)) => return Err(ReplayError::Protocol(m)),
            Err(Attempt::Retry { status, got_ack }) => {
                if got_ack {
                    retries = 0;
                }
                if retries >= opts.max_retries {
                    return Err(ReplayError::Exhausted {
                        retries,
                        code: status.code(),
                        message: status.message().to_string(),
                        report,
                    });
                }
                let wait = opts.backoff.mul_f64(1.6f64.powi(retries as i32));
                retries += 1;
                tracing::info!(code = ?status.code(), message = status.message(), ?wait, "retrying the stream");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

enum Attempt {
    Final(tonic::Status),
    Retry {
        status: tonic::Status,
        got_ack: bool,
    },
    Protocol(String),
}

async fn attempt(
    events: &[Event],
    opts: &ReplayOptions,
    unacked: &mut VecDeque<u64>,
    next: &mut u64,
    disconnects: &mut Vec<u64>,
    highest_acked: u64,
    report: &mut ReplayReport,
) -> Result<(), Attempt> {
    let channel = match connect(&opts.target).await {
        Ok(c) => c,
        Err(e) => {
            return Err(Attempt::Retry {
                status: tonic::Status::unavailable(e.to_string()),
                got_ack: false,
            })
        }
    };
    let mut client = PublishBuildEventClient::new(channel).max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel::<PublishBuildToolEventStreamRequest>(64);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    for (k, v) in &opts.headers {
        if let (Ok(k), Ok(v)) = (
            k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
            v.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>(),
        ) {
            req.metadata_mut().insert(k, v);
        }
    }
    // Re-send: optionally some acked ones (lost acks), then every unacked one.
    let resend_from = highest_acked.saturating_sub(opts.faults.resend_acked) + 1;
    let mut to_send: VecDeque<u64> = VecDeque::new();
    if report.rpcs > 1 && opts.faults.resend_acked > 0 {
        for s in resend_from..=highest_acked {
            to_send.push_back(s);
        }
        // Those count as unacked again, in front of the real ones.
        let mut front: VecDeque<u64> = (resend_from..=highest_acked).collect();
        // Drop the re-sends of a previous retry that broke before their acks.
        front.extend(unacked.drain(..).filter(|s| *s > highest_acked));
        *unacked = front;
    }
    to_send.extend(unacked.iter().copied().filter(|s| *s > highest_acked));
    let mut stream = match client.publish_build_tool_event_stream(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Err(classify(status, false)),
    };
    let total = events.len() as u64;
    let mut sent_on_rpc = 0u64;
    let mut got_ack = false;
    let mut tx = Some(tx);
    loop {
        // Send while there is something to send and the channel has room.
        while let Some(t) = tx.as_ref() {
            let seq = if let Some(s) = to_send.front().copied() {
                s
            } else if *next <= total {
                *next
            } else {
                // Everything sent: half-close.
                tx = None;
                break;
            };
            let permit = match t.try_reserve() {
                Ok(p) => p,
                Err(_) => break,
            };
            permit.send(request(opts, seq, events[(seq - 1) as usize].clone()));
            if to_send.front() == Some(&seq) {
                to_send.pop_front();
            } else {
                *next += 1;
                unacked.push_back(seq);
            }
            sent_on_rpc += 1;
            if let Some(pos) = disconnects.iter().position(|&d| d == sent_on_rpc) {
                disconnects.remove(pos);
                // Cancel the RPC as a broken connection would.
                return Err(Attempt::Retry {
                    status: tonic::Status::unavailable("injected disconnect"),
                    got_ack,
                });
            }
        }
        let msg = if tx.is_some() {
            match tokio::time::timeout(Duration::from_millis(5), stream.message()).await {
                Ok(m) => m,
                Err(_) => continue,
            }
        } else {
            stream.message().await
        };
        match msg {
            Ok(Some(resp)) => {
                let seq = resp.sequence_number as u64;
                match unacked.front() {
                    Some(&oldest) if oldest == seq => {
                        unacked.pop_front();
                        report.acked.push(seq);
                        got_ack = true;
                    }
                    other => {
                        return Err(Attempt::Protocol(format!(
                        "ack for sequence_number {seq}, but the oldest unacked event is {other:?}"
                    )))
                    }
                }
            }
            Ok(None) => {
                return if unacked.is_empty() && *next > total && to_send.is_empty() {
                    Ok(())
                } else {
                    Err(Attempt::Protocol(format!(
                        "server closed the stream with OK but {} events are unacked",
                        unacked.len()
                    )))
                };
            }
            Err(status) => return Err(classify(status, got_ack)),
        }
    }
}

fn classify(status: tonic::Status, got_ack: bool) -> Attempt {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => Attempt::Final(status),
        _ => Attempt::Retry { status, got_ack },
    }
}
