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
    let channel = connect(&opts.target).await.map_err(|e| Attempt::Retry {
        status: tonic::Status::unavailable(e.to_string()),
        got_ack: false,
    })?;
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
    let to_send = resend_plan(
        opts.faults.resend_acked,
        report.rpcs,
        highest_acked,
        unacked,
    );
    let stream = match client.publish_build_tool_event_stream(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Err(classify(status, false)),
    };
    let mut rpc = OneRpc {
        events,
        opts,
        tx: Some(tx),
        to_send,
        unacked,
        next,
        disconnects,
        sent: 0,
        got_ack: false,
    };
    rpc.run(stream, report).await
}

/// What to re-send first on a new RPC: optionally some acked events (as if
/// their acks were lost; on retries only), then every unacked one. The
/// re-sent acked events count as unacked again, in front of the real ones;
/// re-sends of a previous retry that broke before their acks are dropped.
fn resend_plan(
    resend_acked: u64,
    rpcs: u32,
    highest_acked: u64,
    unacked: &mut VecDeque<u64>,
) -> VecDeque<u64> {
    let mut to_send: VecDeque<u64> = VecDeque::new();
    if rpcs > 1 && resend_acked > 0 {
        let resend_from = highest_acked.saturating_sub(resend_acked) + 1;
        to_send.extend(resend_from..=highest_acked);
        let mut front: VecDeque<u64> = (resend_from..=highest_acked).collect();
        front.extend(unacked.drain(..).filter(|s| *s > highest_acked));
        *unacked = front;
    }
    to_send.extend(unacked.iter().copied().filter(|s| *s > highest_acked));
    to_send
}

/// One RPC of a replay: sends while the channel has room, reads acks in
/// order, half-closes after the last event.
struct OneRpc<'a> {
    events: &'a [Event],
    opts: &'a ReplayOptions,
    /// `None` once half-closed.
    tx: Option<mpsc::Sender<PublishBuildToolEventStreamRequest>>,
    /// Re-sends still to go, before any new event.
    to_send: VecDeque<u64>,
    unacked: &'a mut VecDeque<u64>,
    next: &'a mut u64,
    disconnects: &'a mut Vec<u64>,
    sent: u64,
    got_ack: bool,
}

impl OneRpc<'_> {
    async fn run(
        &mut self,
        mut stream: tonic::Streaming<proof_proto::bes::PublishBuildToolEventStreamResponse>,
        report: &mut ReplayReport,
    ) -> Result<(), Attempt> {
        loop {
            self.send_ready()?;
            let msg = if self.tx.is_some() {
                match tokio::time::timeout(Duration::from_millis(5), stream.message()).await {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            } else {
                stream.message().await
            };
            match msg {
                Ok(Some(resp)) => self.on_ack(resp.sequence_number as u64, report)?,
                Ok(None) => return self.on_close(),
                Err(status) => return Err(classify(status, self.got_ack)),
            }
        }
    }

    /// Sends while there is something to send and the channel has room;
    /// half-closes when everything was sent; breaks the RPC at an injected
    /// disconnect.
    fn send_ready(&mut self) -> Result<(), Attempt> {
        let total = self.events.len() as u64;
        while let Some(t) = self.tx.as_ref() {
            let seq = if let Some(s) = self.to_send.front().copied() {
                s
            } else if *self.next <= total {
                *self.next
            } else {
                self.tx = None;
                break;
            };
            let Ok(permit) = t.try_reserve() else {
                break;
            };
            permit.send(request(
                self.opts,
                seq,
                self.events[(seq - 1) as usize].clone(),
            ));
            if self.to_send.front() == Some(&seq) {
                self.to_send.pop_front();
            } else {
                *self.next += 1;
                self.unacked.push_back(seq);
            }
            self.sent += 1;
            if let Some(pos) = self.disconnects.iter().position(|&d| d == self.sent) {
                self.disconnects.remove(pos);
                // Cancel the RPC as a broken connection would.
                return Err(Attempt::Retry {
                    status: tonic::Status::unavailable("injected disconnect"),
                    got_ack: self.got_ack,
                });
            }
        }
        Ok(())
    }

    /// An ack must be for the oldest unacked event.
    fn on_ack(&mut self, seq: u64, report: &mut ReplayReport) -> Result<(), Attempt> {
        match self.unacked.front() {
            Some(&oldest) if oldest == seq => {
                self.unacked.pop_front();
                report.acked.push(seq);
                self.got_ack = true;
                Ok(())
            }
            other => Err(Attempt::Protocol(format!(
                "ack for sequence_number {seq}, but the oldest unacked event is {other:?}"
            ))),
        }
    }

    /// The server closed with OK: only right when everything was acked.
    fn on_close(&self) -> Result<(), Attempt> {
        let total = self.events.len() as u64;
        if self.unacked.is_empty() && *self.next > total && self.to_send.is_empty() {
            Ok(())
        } else {
            Err(Attempt::Protocol(format!(
                "server closed the stream with OK but {} events are unacked",
                self.unacked.len()
            )))
        }
    }
}

fn classify(status: tonic::Status, got_ack: bool) -> Attempt {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => Attempt::Final(status),
        _ => Attempt::Retry { status, got_ack },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_rpc_sends_only_what_is_unacked() {
        let mut unacked: VecDeque<u64> = [4, 5].into();
        assert_eq!(resend_plan(2, 1, 3, &mut unacked), VecDeque::from([4, 5]));
        assert_eq!(unacked, VecDeque::from([4, 5]));
    }

    #[test]
    fn a_retry_resends_acked_events_in_front_and_counts_them_unacked_again() {
        // Acked up to 6; 7 and 8 were sent but not acked; 2 acks "lost".
        let mut unacked: VecDeque<u64> = [7, 8].into();
        assert_eq!(
            resend_plan(2, 2, 6, &mut unacked),
            VecDeque::from([5, 6, 7, 8])
        );
        assert_eq!(unacked, VecDeque::from([5, 6, 7, 8]));
        // The retry broke after re-sending 5 and 6 without their acks: the
        // next plan does not repeat them twice.
        assert_eq!(
            resend_plan(2, 3, 6, &mut unacked),
            VecDeque::from([5, 6, 7, 8])
        );
        assert_eq!(unacked, VecDeque::from([5, 6, 7, 8]));
    }

    #[test]
    fn resending_more_than_was_acked_starts_at_the_first_event() {
        let mut unacked: VecDeque<u64> = VecDeque::new();
        assert_eq!(
            resend_plan(10, 2, 3, &mut unacked),
            VecDeque::from([1, 2, 3])
        );
    }
}
