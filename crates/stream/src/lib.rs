//! Pure stream handling for rbe-proof: no file or network I/O happens here;
//! readers take whatever `Read` the caller opened.
//!
//! - [`delimited`]: varint length-delimited framing.
//! - [`bepfile`]: BEP binary and JSON file readers (format detected).
//! - [`probe`]: a cheap look at one event (kind, BuildStarted, BuildFinished, last_message).
//! - [`sequencer`]: the BES sequence rules (append, duplicate, refuse).
//! - [`summary`]: an invocation's identity from its events.
//! - [`tolerant`]: proto3-JSON → message conversion that decides what happens to a field whose value does not fit the schema.
//! - `jsonfast` (private): the planned fast path of the JSON reader.

pub mod bepfile;
pub mod delimited;
mod jsonfast;
pub mod probe;
pub mod sequencer;
pub mod summary;
pub mod tolerant;
