//! The wire: one tool-stream message parsed and checked, acks, and the
//! statuses the RPC ends with.

use super::*;

/// One parsed tool-stream message.
pub(super) struct Parsed {
    pub(super) stream_id: StreamId,
    pub(super) seq: u64,
    pub(super) kind: RecordKind,
    pub(super) payload: Bytes,
    pub(super) probe: Option<Probe>,
}

pub(super) fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

pub(super) fn parse(req: PublishBuildToolEventStreamRequest) -> Result<Parsed, Status> {
    let OrderedBuildEvent {
        stream_id,
        sequence_number,
        event,
    } = req.ordered_build_event.ok_or_else(|| {
        invalid("request has no ordered_build_event; this is not a Bazel BES stream")
    })?;
    let stream_id = stream_id.ok_or_else(|| invalid("ordered_build_event has no stream_id"))?;
    if stream_id.invocation_id.is_empty() {
        return Err(invalid(
            "stream_id.invocation_id is empty; the tool event stream must name its invocation",
        ));
    }
    if stream_id.invocation_id.len() > proof_artifact::MAX_INVOCATION_ID_LEN {
        return Err(invalid(format!(
            "stream_id.invocation_id is {} characters, longer than the {} a proof can be named \
             with; let Bazel choose the id (a UUID) or pass a shorter --invocation_id",
            stream_id.invocation_id.len(),
            proof_artifact::MAX_INVOCATION_ID_LEN
        )));
    }
    let seq = u64::try_from(sequence_number)
        .map_err(|_| invalid(format!("sequence_number {sequence_number} is negative")))?;
    let event = event.ok_or_else(|| invalid(format!("event {seq} has no event")))?;
    let (kind, payload, probe) = match event.event {
        Some(Event::BazelEvent(any)) => {
            if any.type_url != proof_proto::BEP_EVENT_TYPE_URL {
                return Err(invalid(format!(
                    "event {seq}: bazel_event has type {:?}, expected {:?}",
                    any.type_url,
                    proof_proto::BEP_EVENT_TYPE_URL
                )));
            }
            if any.value.len() > proof_store::MAX_EVENT_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "event {seq} is {} bytes, larger than the {} bytes this server stores per event; \
                     the event cannot be stored (Bazel's upload of this invocation will fail)",
                    any.value.len(),
                    proof_store::MAX_EVENT_BYTES
                )));
            }
            let p = probe(&any.value).map_err(|e| invalid(format!("event {seq}: {e}")))?;
            // The event's bytes move into the journal record: no copy.
            (RecordKind::BepEvent, Bytes::from(any.value), Some(p))
        }
        // ComponentStreamFinished, and every other kind, including ones
        // newer than our schema (prost sees no variant then): stored as they
        // decode and acked, never refused.
        other => {
            let kind = if matches!(other, Some(Event::ComponentStreamFinished(_))) {
                RecordKind::StreamFinished
            } else {
                RecordKind::Other
            };
            let event = BuildEvent {
                event_time: event.event_time,
                event: other,
            };
            (
                kind,
                Bytes::from(prost::Message::encode_to_vec(&event)),
                None,
            )
        }
    };
    Ok(Parsed {
        stream_id,
        seq,
        kind,
        payload,
        probe,
    })
}

pub(super) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidInvocationId { .. } | StoreError::InvalidBuildId { .. } => {
            invalid(e.to_string())
        }
        StoreError::AlreadyFinalized(_) | StoreError::TenantMismatch { .. } => {
            Status::failed_precondition(e.to_string())
        }
        // Retrying cannot help: the same event is as large next time.
        StoreError::RecordTooLarge { .. } => Status::resource_exhausted(e.to_string()),
        other => Status::unavailable(format!("storage failed, retry later: {other}")),
    }
}

pub(super) fn ack(p: &Parsed) -> PublishBuildToolEventStreamResponse {
    PublishBuildToolEventStreamResponse {
        stream_id: Some(p.stream_id.clone()),
        sequence_number: p.seq as i64,
    }
}

/// The status to end an RPC with whose request stream failed to decode:
/// tonic reports a request above the size limit as OUT_OF_RANGE; gRPC's code
/// for it is RESOURCE_EXHAUSTED.
pub(super) fn inbound_status(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(format!(
            "request too large for this server: {}; raise `proof serve --max-message-bytes`",
            status.message()
        ))
    } else {
        status
    }
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A client's timestamp in milliseconds, with checked arithmetic: a time
/// that does not fit is refused, never wrapped (or a panic).
pub(super) fn ts_ms(t: Option<&prost_types::Timestamp>) -> Result<Option<i64>, Status> {
    let Some(t) = t else { return Ok(None) };
    t.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(t.nanos) / 1_000_000))
        .map(Some)
        .ok_or_else(|| {
            invalid(format!(
                "lifecycle event_time {}s {}ns is out of range; send a real time",
                t.seconds, t.nanos
            ))
        })
}

pub(super) fn status_name(s: Option<&proof_proto::bes::BuildStatus>) -> String {
    let r = s.map_or(0, |s| s.result);
    proof_proto::bes::build_status::Result::try_from(r)
        .map_or_else(|_| format!("RESULT_{r}"), |r| r.as_str_name().to_string())
}

pub(super) type AckStream =
    Pin<Box<dyn Stream<Item = Result<PublishBuildToolEventStreamResponse, Status>> + Send>>;
