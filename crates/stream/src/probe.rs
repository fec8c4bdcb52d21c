//! A cheap look at one BEP event: which kind it is and whether it carries
//! the flags that decide completeness. Decodes only the id, `last_message`
//! and the small BuildStarted payload; every other field is skipped.

use proof_proto::bep::{build_event_id::Id, BuildEventId, BuildStarted};

/// The fields of `build_event_stream.BuildEvent` the ingest hot path needs (the
/// summary reads the same ones: `SummaryBuilder::push_probed`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProbeMessage {
    #[prost(message, optional, tag = "1")]
    pub(crate) id: Option<BuildEventId>,
    #[prost(bool, tag = "20")]
    pub(crate) last_message: bool,
    #[prost(message, optional, tag = "5")]
    pub(crate) started: Option<BuildStarted>,
    #[prost(bytes = "vec", optional, tag = "14")]
    pub(crate) finished: Option<Vec<u8>>,
}

/// What the probe learned about one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The event is BuildStarted; its uuid is the invocation id.
    pub started_uuid: Option<String>,
    /// The event is BuildFinished (the payload is present).
    pub build_finished: bool,
    /// `last_message` is set: nothing follows in this stream.
    pub last_message: bool,
    /// The id variant's name, for diagnostics (`"unknown"` for new kinds).
    pub kind: &'static str,
}

/// Why bytes are not a BEP event.
#[derive(Debug, thiserror::Error)]
#[error("not a build_event_stream.BuildEvent: {0}")]
pub struct ProbeError(#[from] prost::DecodeError);

/// Looks at one serialized BEP event.
pub fn probe(event: &[u8]) -> Result<Probe, ProbeError> {
    let m: ProbeMessage = prost::Message::decode(event)?;
    Ok(Probe::of(&m))
}

impl Probe {
    pub(crate) fn of(m: &ProbeMessage) -> Probe {
        Probe {
            started_uuid: m.started.as_ref().map(|s| s.uuid.clone()),
            build_finished: m.finished.is_some(),
            last_message: m.last_message,
            kind: m
                .id
                .as_ref()
                .and_then(|i| i.id.as_ref())
                .map_or("unknown", id_name),
        }
    }
}

/// The snake_case name of a BuildEventId variant.
pub fn id_name(id: &Id) -> &'static str {
    match id {
        Id::Unknown(_) => "unknown",
        Id::Progress(_) => "progress",
        Id::Started(_) => "started",
        Id::Pattern(_) => "pattern",
        Id::TargetCompleted(_) => "target_completed",
        Id::ActionCompleted(_) => "action_completed",
        Id::TestSummary(_) => "test_summary",
        Id::TestResult(_) => "test_result",
        Id::BuildFinished(_) => "build_finished",
        Id::PatternSkipped(_) => "pattern_skipped",
        Id::UnstructuredCommandLine(_) => "unstructured_command_line",
        Id::OptionsParsed(_) => "options_parsed",
        Id::NamedSet(_) => "named_set",
        Id::WorkspaceStatus(_) => "workspace_status",
        Id::Configuration(_) => "configuration",
        Id::TargetConfigured(_) => "target_configured",
        Id::Fetch(_) => "fetch",
        Id::StructuredCommandLine(_) => "structured_command_line",
        Id::UnconfiguredLabel(_) => "unconfigured_label",
        Id::BuildToolLogs(_) => "build_tool_logs",
        Id::ConfiguredLabel(_) => "configured_label",
        Id::BuildMetrics(_) => "build_metrics",
        Id::Workspace(_) => "workspace",
        Id::BuildMetadata(_) => "build_metadata",
        Id::ConvenienceSymlinksIdentified(_) => "convenience_symlinks_identified",
        Id::TargetSummary(_) => "target_summary",
        Id::ExecRequest(_) => "exec_request",
        Id::TestProgress(_) => "test_progress",
    }
}

/// The top level of an event, read from its wire form without decoding any field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outline {
    /// The number of the id's one field (its `BuildEventId` variant).
    pub(crate) id_variant: u32,
    pub(crate) last_message: bool,
    /// A BuildStarted payload is there.
    pub(crate) started: bool,
    /// A BuildFinished payload is there.
    pub(crate) finished: bool,
}

/// The outline of an event in the plain form an encoder writes: the fields it reads
/// (id, `last_message`, BuildStarted, BuildFinished) once at most and of their own wire
/// types, an id of exactly one variant, no groups. `None` for anything else, malformed
/// or merely unusual, which only a full decode can judge the way [`probe`] does. The
/// id's variant is not decoded: only an event this program encoded (its id well formed
/// by construction) may be judged by its outline.
pub(crate) fn outline(event: &[u8]) -> Option<Outline> {
    const ID: u32 = 1;
    const STARTED: u32 = 5;
    const FINISHED: u32 = 14;
    const LAST_MESSAGE: u32 = 20;
    let mut o = Outline {
        id_variant: 0,
        last_message: false,
        started: false,
        finished: false,
    };
    let mut seen_last_message = false;
    let mut pos = 0;
    while pos < event.len() {
        let (number, wire) = key(event, &mut pos)?;
        match (number, wire) {
            (ID, WIRE_LEN) => {
                if o.id_variant != 0 {
                    return None;
                }
                let id = len_delimited(event, &mut pos)?;
                let mut at = 0;
                let (variant, WIRE_LEN) = key(id, &mut at)? else {
                    return None;
                };
                len_delimited(id, &mut at)?;
                if at != id.len() {
                    return None;
                }
                o.id_variant = variant;
            }
            (LAST_MESSAGE, WIRE_VARINT) => {
                if std::mem::replace(&mut seen_last_message, true) {
                    return None;
                }
                o.last_message = varint(event, &mut pos)? != 0;
            }
            (STARTED | FINISHED, WIRE_LEN) => {
                let flag = if number == STARTED {
                    &mut o.started
                } else {
                    &mut o.finished
                };
                if std::mem::replace(flag, true) {
                    return None;
                }
                len_delimited(event, &mut pos)?;
            }
            (ID | LAST_MESSAGE | STARTED | FINISHED, _) => return None,
            (_, WIRE_VARINT) => {
                varint(event, &mut pos)?;
            }
            (_, WIRE_LEN) => {
                len_delimited(event, &mut pos)?;
            }
            (_, WIRE_FIXED64) => pos = pos.checked_add(8).filter(|&p| p <= event.len())?,
            (_, WIRE_FIXED32) => pos = pos.checked_add(4).filter(|&p| p <= event.len())?,
            _ => return None,
        }
    }
    (o.id_variant != 0).then_some(o)
}

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

/// A field's key: its number (1 or more) and wire type.
fn key(buf: &[u8], pos: &mut usize) -> Option<(u32, u32)> {
    let k = u32::try_from(varint(buf, pos)?).ok()?;
    let number = k >> 3;
    (number > 0).then_some((number, k & 7))
}

/// A varint at `pos`, read by prost's own decoder (the one whose verdict an outline
/// must agree with).
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut rest = buf.get(*pos..)?;
    let v = prost::encoding::decode_varint(&mut rest).ok()?;
    *pos = buf.len() - rest.len();
    Some(v)
}

fn len_delimited<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(varint(buf, pos)?).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= buf.len())?;
    let body = &buf[*pos..end];
    *pos = end;
    Some(body)
}

/// The name [`id_name`] gives the `BuildEventId` variant of field `number` (`"unknown"`
/// for a number the schema does not have, as a decode skips it).
pub(crate) fn variant_name(number: u32) -> &'static str {
    fn decode(number: u32) -> &'static str {
        let mut buf = Vec::with_capacity(6);
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut buf);
        buf.push(0);
        <BuildEventId as prost::Message>::decode(&buf[..])
            .ok()
            .and_then(|i| i.id)
            .map_or("unknown", |id| id_name(&id))
    }
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        std::iter::once("unknown")
            .chain((1..64).map(decode))
            .collect()
    });
    match names.get(number as usize) {
        Some(name) => name,
        None => decode(number),
    }
}
