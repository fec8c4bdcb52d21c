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
pub enum ProbeError {
    #[error("not a build_event_stream.BuildEvent: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("not a build_event_stream.BuildEvent as an encoder writes one: {0}")]
    Shape(#[from] ShapeError),
}

/// Looks at one serialized BEP event. An event not of one [`shape`] is refused.
pub fn probe(event: &[u8]) -> Result<Probe, ProbeError> {
    shape(event)?;
    let m: ProbeMessage = prost::Message::decode(event)?;
    Ok(Probe::of(&m))
}

/// The top level of one `build_event_stream.BuildEvent`, as every reader of it must see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape<'a> {
    /// The payload: its field number (a member of the `payload` oneof, or a number this
    /// schema does not know) and its bytes. `None`: the event has no payload.
    pub payload: Option<(u32, &'a [u8])>,
}

/// Why an event's top level is not of one shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error(
        "field {field} appears twice at the top level (byte {at}); an encoder writes a \
         singular field once, and decoders that keep the first or merge would read another \
         event than the one judged"
    )]
    FieldTwice { field: u32, at: usize },
    #[error(
        "it carries two payloads, fields {first} and {second} (byte {at}); a BuildEvent has \
         one (the `payload` oneof), and decoders that keep the first or the last would read \
         different events"
    )]
    TwoPayloads { first: u32, second: u32, at: usize },
    #[error("its top level does not parse at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

/// The one reading of an event's top level that the server's checks, the tenant gate, the
/// probe and the evidence all share ([trust 4] finding 2): `id` (1) and `last_message` (20)
/// at most once, `children` (2) any number of times, and at most one member of the
/// `payload` oneof, once. Anything else is refused, so a oneof split such as
/// `[22: allowed][3: …][22: forbidden]` can never be judged by one field and read by
/// another. Fields this schema does not declare are skipped, as every decoder skips them
/// (a reader that cannot see a field cannot disagree about it). Nothing is decoded.
pub fn shape(event: &[u8]) -> Result<Shape<'_>, ShapeError> {
    const ID: u32 = 1;
    const CHILDREN: u32 = 2;
    const LAST_MESSAGE: u32 = 20;
    let malformed = |at, what| ShapeError::Malformed { at, what };
    let mut payload: Option<(u32, &[u8])> = None;
    let (mut seen_id, mut seen_last) = (false, false);
    let mut pos = 0;
    while pos < event.len() {
        let at = pos;
        let (number, wire) = key(event, &mut pos).ok_or(malformed(at, "a bad field key"))?;
        let body: &[u8] = match wire {
            WIRE_VARINT => {
                varint(event, &mut pos).ok_or(malformed(at, "a bad varint"))?;
                &[]
            }
            WIRE_LEN => len_delimited(event, &mut pos).ok_or(malformed(at, "a cut field"))?,
            WIRE_FIXED64 | WIRE_FIXED32 => {
                let n = if wire == WIRE_FIXED64 { 8 } else { 4 };
                pos = pos
                    .checked_add(n)
                    .filter(|&p| p <= event.len())
                    .ok_or(malformed(at, "a cut fixed-width field"))?;
                &[]
            }
            _ => return Err(malformed(at, "a group, which no BuildEvent field is")),
        };
        let seen = match number {
            ID => &mut seen_id,
            LAST_MESSAGE => &mut seen_last,
            CHILDREN => continue,
            n if !is_payload(n) => continue,
            _ => {
                if let Some((first, _)) = payload {
                    return Err(if first == number {
                        ShapeError::FieldTwice { field: number, at }
                    } else {
                        ShapeError::TwoPayloads {
                            first,
                            second: number,
                            at,
                        }
                    });
                }
                payload = Some((number, body));
                continue;
            }
        };
        if std::mem::replace(seen, true) {
            return Err(ShapeError::FieldTwice { field: number, at });
        }
    }
    Ok(Shape { payload })
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
    const CHILDREN: u32 = 2;
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
    let mut payloads = 0u32;
    let mut pos = 0;
    while pos < event.len() {
        let (number, wire) = key(event, &mut pos)?;
        if !matches!(number, ID | CHILDREN | LAST_MESSAGE) && is_payload(number) {
            // A second payload is not the plain form: the decode refuses it.
            payloads += 1;
            if payloads > 1 {
                return None;
            }
        }
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

/// Whether field `number` of `build_event_stream.BuildEvent` is a member of its `payload`
/// oneof, as the generated type decodes it (so the one list is the schema's).
fn is_payload(number: u32) -> bool {
    fn decode(number: u32) -> bool {
        let mut buf = Vec::with_capacity(6);
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut buf);
        buf.push(0);
        <proof_proto::bep::BuildEvent as prost::Message>::decode(&buf[..])
            .is_ok_and(|e| e.payload.is_some())
    }
    static PAYLOAD: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    let table = PAYLOAD.get_or_init(|| (0..64).map(|n| n > 0 && decode(n)).collect());
    match table.get(number as usize) {
        Some(&p) => p,
        None => decode(number),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `[number: LEN body]`.
    fn field(number: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    fn progress_id() -> Vec<u8> {
        field(1, &field(2, &[8, 1])) // id { progress (2) { opaque_count: 1 } }
    }

    #[test]
    fn the_payload_members_are_the_schemas() {
        let members: Vec<u32> = (1..200).filter(|&n| is_payload(n)).collect();
        let mut expected: Vec<u32> = (3..=30).filter(|n| ![11, 19, 20].contains(n)).collect();
        expected.sort();
        assert_eq!(members, expected);
    }

    #[test]
    fn one_payload_and_repeated_children_are_one_shape() {
        let ev = [
            progress_id(),
            field(2, &field(1, &[])),
            field(2, &field(1, &[8, 2])),
            field(3, &field(2, b"x")),
            vec![0xa0, 0x01, 1], // last_message (20): true
        ]
        .concat();
        let s = shape(&ev).unwrap();
        assert_eq!(s.payload, Some((3, &field(2, b"x")[..])));
        assert!(probe(&ev).unwrap().last_message);
        assert_eq!(shape(&progress_id()).unwrap().payload, None);
        assert_eq!(shape(&[]).unwrap().payload, None);
    }

    /// [trust 4] findings 2 and 3: prost keeps the last payload of a oneof and merges
    /// a repeated message field; a reader of the first, or of fields one by one,
    /// would judge another event. Every such event is refused by every reader.
    #[test]
    fn two_payloads_or_a_field_twice_are_refused() {
        let started = field(5, &field(1, b"X")); // started { uuid: "X" }
        let progress = field(3, &field(2, b"x"));
        let masked = [progress_id(), started.clone(), progress.clone()].concat();
        assert!(matches!(
            shape(&masked),
            Err(ShapeError::TwoPayloads {
                first: 5,
                second: 3,
                ..
            })
        ));
        assert!(matches!(probe(&masked), Err(ProbeError::Shape(_))));
        let twice = [progress_id(), field(22, b""), field(22, b"")].concat();
        assert!(matches!(
            shape(&twice),
            Err(ShapeError::FieldTwice { field: 22, .. })
        ));
        let ids = [progress_id(), progress_id()].concat();
        assert!(matches!(
            shape(&ids),
            Err(ShapeError::FieldTwice { field: 1, .. })
        ));
        let last = [progress_id(), vec![0xa0, 0x01, 0, 0xa0, 0x01, 1]].concat();
        assert!(matches!(
            shape(&last),
            Err(ShapeError::FieldTwice { field: 20, .. })
        ));
        // A field this schema does not declare is skipped, as every decoder skips it.
        let unknown = [
            progress_id(),
            progress.clone(),
            field(99, b""),
            field(99, b""),
        ]
        .concat();
        assert_eq!(
            shape(&unknown).unwrap().payload,
            Some((3, &field(2, b"x")[..]))
        );
        assert!(probe(&unknown).is_ok());
        // The outline never takes such an event: the decode's verdict stands.
        assert_eq!(outline(&masked), None);
        // Groups and cut fields do not parse.
        assert!(matches!(
            shape(&[progress_id(), vec![3 << 3 | 3]].concat()),
            Err(ShapeError::Malformed { .. })
        ));
        assert!(matches!(
            shape(&[progress_id(), vec![3 << 3 | 2, 5, 0]].concat()),
            Err(ShapeError::Malformed { .. })
        ));
    }
}
