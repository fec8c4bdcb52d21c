use proof_stream::delimited::FramingError;
use thiserror::Error;

/// Why evidence could not be derived.
#[derive(Debug, Error)]
pub enum EvidenceError {
    #[error("BEP event #{index} is not a valid build_event_stream.BuildEvent: {source}; pass the bytes of one record of a --build_event_binary_file (without its length prefix)")]
    BadEvent {
        index: u64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("BEP event #{index} is not a valid build_event_stream.BuildEvent: {source}; pass Bazel's own unmodified stream")]
    BadShape {
        index: u64,
        #[source]
        source: proof_stream::probe::ShapeError,
    },
    #[error("the BEP stream cannot be framed: {0}; pass an unmodified --build_event_binary_file")]
    BepFraming(#[source] FramingError),
    #[error("the execution log cannot be framed: {0}; pass an unmodified --execution_log_binary_file or --execution_log_compact_file")]
    ExecLogFraming(#[source] FramingError),
    #[error("execution log record #{index} is not a valid {message}: {source}; pass a --execution_log_binary_file (SpawnExec) or --execution_log_compact_file (ExecLogEntry), not the JSON log")]
    BadExecLogRecord {
        index: u64,
        message: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the compact execution log is not a valid zstd stream: {0}; pass the file exactly as Bazel wrote it")]
    Zstd(#[source] std::io::Error),
    #[error("reading the execution log failed: {0}")]
    ExecLogIo(#[source] std::io::Error),
    #[error("no BuildStarted event was seen in {events} events; the BEP stream is truncated at its start or is not a BEP stream")]
    NoBuildStarted { events: u64 },
    #[error("a second BuildStarted event (invocation {second}) followed invocation {first}; feed one invocation per EvidenceBuilder")]
    SecondBuildStarted { first: String, second: String },
    #[error("the execution log belongs to invocation {exec_log}, but the BEP stream is invocation {bep}; pass the log written by the same Bazel command")]
    InvocationMismatch { bep: String, exec_log: String },
    #[error("the remote gRPC log cannot be framed: {0}; pass the file Bazel wrote with --experimental_remote_grpc_log (or --remote_grpc_log), unmodified")]
    GrpcLogFraming(#[source] FramingError),
    #[error("remote gRPC log record #{index} is not a remote_logging.LogEntry: {source}; pass the file Bazel wrote with --experimental_remote_grpc_log, unmodified")]
    BadGrpcLog {
        index: u64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the corroboration records cannot be framed: {0}; the artifact's corroboration.bin is damaged, record the proof again")]
    CorroborationFraming(#[source] FramingError),
    #[error("corroboration record #{index} is invalid: {what}; record the proof again with --corroborate")]
    BadCorroboration { index: u64, what: String },
    #[error("the executor ledger cannot be framed: {0}; the artifact's executor.bin is damaged, record the proof again")]
    LedgerFraming(#[source] FramingError),
    #[error("executor ledger record #{index} is invalid: {what}; record the proof again with `proof serve --executor`")]
    BadLedger { index: u64, what: String },
    #[error("the origin member is invalid: {0}; record the proof again")]
    BadOrigin(String),
}
