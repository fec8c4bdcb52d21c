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
