//! Readers for the files Bazel writes with `--build_event_binary_file`
//! (varint-delimited binary events) and `--build_event_json_file` (one
//! proto3-JSON event per line). Both yield serialized binary
//! `build_event_stream.BuildEvent`s, so every later step sees one form.
//!
//! JSON events are converted to binary through the project's own schema:
//! fields our schema does not declare are dropped in that conversion (the
//! binary file keeps everything, byte for byte, and is the preferred input).

use std::io::{BufRead, Read};
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use thiserror::Error;

use crate::delimited::{DelimitedReader, FramingError, DEFAULT_MAX_RECORD};

/// The two file formats Bazel writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BepFormat {
    /// `--build_event_binary_file`
    Binary,
    /// `--build_event_json_file`
    Json,
}

/// Why a BEP file could not be read.
#[derive(Debug, Error)]
pub enum BepFileError {
    #[error("the file is empty: expected Bazel's --build_event_binary_file or --build_event_json_file output")]
    Empty,
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("line {line}: {reason}; expected one JSON BuildEvent per line as written by --build_event_json_file")]
    NotBepJson { line: u64, reason: String },
    #[error("line {line}: longer than the limit of {max} bytes")]
    LineTooLong { line: u64, max: usize },
    #[error("line {line}: does not end with a newline: the file was cut short")]
    TruncatedLine { line: u64 },
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// Guesses the format from the first bytes of the file: a JSON file starts
/// with `{"`; anything else is read as binary (and validated as such).
pub fn detect(prefix: &[u8]) -> Option<BepFormat> {
    let mut it = prefix.iter().copied().filter(|b| !b.is_ascii_whitespace());
    match it.next() {
        None => None,
        Some(b'{') if it.next() == Some(b'"') => Some(BepFormat::Json),
        Some(_) => Some(BepFormat::Binary),
    }
}

pub(crate) fn bep_descriptor() -> &'static MessageDescriptor {
    static DESC: OnceLock<MessageDescriptor> = OnceLock::new();
    DESC.get_or_init(|| {
        let pool = DescriptorPool::decode(proof_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into proof-proto decodes");
        pool.get_message_by_name("build_event_stream.BuildEvent")
            .expect("build_event_stream.BuildEvent is in the descriptor set")
    })
}

/// Converts one proto3-JSON BEP event to its binary form: the fast path
/// (`jsonfast`) for what Bazel ordinarily writes, the general one
/// ([`json_event_to_binary_general`]) for everything else and for errors.
pub fn json_event_to_binary(json: &[u8]) -> Result<Vec<u8>, String> {
    match crate::jsonfast::convert(json) {
        Ok(bin) => Ok(bin),
        Err(crate::jsonfast::GiveUp) => json_event_to_binary_general(json),
    }
}

/// The general conversion of one proto3-JSON BEP event: a JSON tree, then a
/// dynamic message, then its encoding.
pub fn json_event_to_binary_general(json: &[u8]) -> Result<Vec<u8>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    if !obj.get("id").is_some_and(serde_json::Value::is_object) {
        return Err("not a BEP event: it has no \"id\" object".into());
    }
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(bep_descriptor().clone(), value, &options)
        .map_err(|e| format!("not a valid BuildEvent: {e}"))?;
    Ok(prost::Message::encode_to_vec(&msg))
}

/// Iterates over the events of a BEP file as serialized binary events.
pub struct BepFileReader<R> {
    inner: Inner<R>,
    format: BepFormat,
}

enum Inner<R> {
    Binary(DelimitedReader<R>),
    Json {
        reader: R,
        line: u64,
        done: bool,
        buf: Vec<u8>,
    },
}

impl<R: BufRead> BepFileReader<R> {
    /// Detects the format from the buffered prefix of `reader`.
    pub fn open(mut reader: R) -> Result<Self, BepFileError> {
        let format = detect(reader.fill_buf()?).ok_or(BepFileError::Empty)?;
        Ok(Self::with_format(reader, format))
    }

    pub fn with_format(reader: R, format: BepFormat) -> Self {
        let inner = match format {
            BepFormat::Binary => Inner::Binary(DelimitedReader::new(reader)),
            BepFormat::Json => Inner::Json {
                reader,
                line: 0,
                done: false,
                buf: Vec::new(),
            },
        };
        Self { inner, format }
    }

    pub fn format(&self) -> BepFormat {
        self.format
    }
}

impl<R: BufRead> Iterator for BepFileReader<R> {
    type Item = Result<Vec<u8>, BepFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Binary(r) => r.next().map(|r| r.map_err(BepFileError::from)),
            Inner::Json {
                reader,
                line,
                done,
                buf,
            } => loop {
                if *done {
                    return None;
                }
                *line += 1;
                buf.clear();
                let max = DEFAULT_MAX_RECORD;
                match reader.by_ref().take(max as u64 + 1).read_until(b'\n', buf) {
                    Err(e) => {
                        *done = true;
                        return Some(Err(e.into()));
                    }
                    Ok(0) => {
                        *done = true;
                        return None;
                    }
                    Ok(_) => {}
                }
                if buf.len() > max {
                    *done = true;
                    return Some(Err(BepFileError::LineTooLong { line: *line, max }));
                }
                if buf.last() != Some(&b'\n') {
                    *done = true;
                    return Some(Err(BepFileError::TruncatedLine { line: *line }));
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line_no = *line;
                return Some(json_event_to_binary(buf).map_err(|reason| {
                    *done = true;
                    BepFileError::NotBepJson {
                        line: line_no,
                        reason,
                    }
                }));
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/bazel-4.2.3"
    );

    fn read_all(path: &str) -> Result<(BepFormat, Vec<Vec<u8>>), BepFileError> {
        let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let r = BepFileReader::open(f)?;
        let fmt = r.format();
        Ok((fmt, r.collect::<Result<_, _>>()?))
    }

    #[test]
    fn json_and_binary_files_of_one_build_give_the_same_events() {
        for scenario in ["remote-build", "remote-test", "failing-build"] {
            let (fb, bin) = read_all(&format!("{FIX}/{scenario}/bep.bin")).unwrap();
            let (fj, json) = read_all(&format!("{FIX}/{scenario}/bep.json")).unwrap();
            assert_eq!((fb, fj), (BepFormat::Binary, BepFormat::Json));
            assert_eq!(bin.len(), json.len(), "{scenario}");
            // Decoded through our schema, both hold the same events (the
            // binary file also carries fields the schema does not declare,
            // and Bazel's file transports may write events in another order).
            let canon = |evs: &[Vec<u8>]| {
                let mut v: Vec<Vec<u8>> = evs
                    .iter()
                    .map(|e| {
                        let m = <proof_proto::bep::BuildEvent as prost::Message>::decode(&e[..])
                            .unwrap();
                        prost::Message::encode_to_vec(&m)
                    })
                    .collect();
                v.sort();
                v
            };
            assert!(
                canon(&bin) == canon(&json),
                "{scenario}: bep.bin and bep.json hold different events"
            );
        }
    }

    #[test]
    fn rejects_json_that_is_not_bep() {
        let err = BepFileReader::open(&b"{\"hello\": 1}\n"[..])
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("no \"id\""), "{err}");
        let err = BepFileReader::open(&b"{\"id\": {\"started\": {}}"[..])
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, BepFileError::TruncatedLine { line: 1 }),
            "{err}"
        );
        assert!(matches!(
            BepFileReader::open(&b"  \n"[..]),
            Err(BepFileError::Empty)
        ));
    }

    #[test]
    fn truncated_binary_is_an_error_not_a_short_stream() {
        let bin = std::fs::read(format!("{FIX}/remote-build/bep.bin")).unwrap();
        let cut = &bin[..bin.len() - 10];
        let res: Result<Vec<_>, _> = BepFileReader::open(cut).unwrap().collect();
        assert!(matches!(
            res,
            Err(BepFileError::Framing(FramingError::Truncated {
                index: 80,
                ..
            }))
        ));
    }
}
