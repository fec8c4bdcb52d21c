//! Readers for the files Bazel writes with `--build_event_binary_file`
//! (varint-delimited binary events) and `--build_event_json_file` (one
//! proto3-JSON event per line). Both yield serialized binary
//! `build_event_stream.BuildEvent`s, so every later step sees one form.
//!
//! JSON events are converted to binary through the project's own schema:
//! fields our schema does not declare are dropped in that conversion (the
//! binary file keeps everything, byte for byte, and is the preferred input).
//! A declared field whose value does not fit the schema never costs the
//! event: the event is kept without that field and a [`ConversionWarning`]
//! names the line and the field (the rules live in [`crate::tolerant`]).

use std::io::{BufRead, Read};
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};
use thiserror::Error;

use crate::delimited::{DelimitedReader, FramingError, DEFAULT_MAX_RECORD};
use crate::tolerant::{json_to_message, FieldWarning};

/// Warnings kept per file; beyond this only [`BepFileReader::warning_count`] grows.
pub const MAX_KEPT_WARNINGS: usize = 1000;

/// A field of one line of a `--build_event_json_file` that did not fit the
/// schema: the event was kept without it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConversionWarning {
    /// 1-based line number in the file.
    pub line: u64,
    /// Path of the field in the event (JSON names), see [`FieldWarning`].
    pub field: String,
    /// Why the value did not fit.
    pub reason: String,
}

impl std::fmt::Display for ConversionWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: field {} does not fit the schema ({}); the event was kept without it",
            self.line, self.field, self.reason
        )
    }
}

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

/// Converts one proto3-JSON BEP event to its binary form, with a warning for
/// every declared field that did not fit and was left out. Fails only when
/// the line is not a JSON object with an `"id"` object.
///
/// What Bazel ordinarily writes goes through the fast path (`jsonfast`, no
/// JSON tree, no dynamic message, never a warning); everything else, and
/// every error, through the general one ([`json_event_to_binary_general`]).
pub fn json_event_to_binary(json: &[u8]) -> Result<(Vec<u8>, Vec<FieldWarning>), String> {
    match crate::jsonfast::convert(json) {
        Ok(bin) => Ok((bin, Vec::new())),
        Err(crate::jsonfast::GiveUp) => json_event_to_binary_general(json),
    }
}

/// The general conversion of one proto3-JSON BEP event: a JSON tree, then a
/// dynamic message (tolerant: see [`crate::tolerant`]), then its encoding.
pub fn json_event_to_binary_general(json: &[u8]) -> Result<(Vec<u8>, Vec<FieldWarning>), String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    if !obj.get("id").is_some_and(serde_json::Value::is_object) {
        return Err("not a BEP event: it has no \"id\" object".into());
    }
    let mut warnings = Vec::new();
    let msg =
        json_to_message(bep_descriptor(), &value, &mut warnings).ok_or("not a JSON object")?;
    Ok((prost::Message::encode_to_vec(&msg), warnings))
}

/// Iterates over the events of a BEP file as serialized binary events.
pub struct BepFileReader<R> {
    inner: Inner<R>,
    format: BepFormat,
    warnings: Vec<ConversionWarning>,
    warning_count: u64,
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
        Self {
            inner,
            format,
            warnings: Vec::new(),
            warning_count: 0,
        }
    }

    pub fn format(&self) -> BepFormat {
        self.format
    }

    /// The conversion warnings of the events read so far (JSON files only;
    /// at most [`MAX_KEPT_WARNINGS`] are kept).
    pub fn warnings(&self) -> &[ConversionWarning] {
        &self.warnings
    }

    /// Takes the warnings kept so far, leaving none.
    pub fn take_warnings(&mut self) -> Vec<ConversionWarning> {
        std::mem::take(&mut self.warnings)
    }

    /// How many warnings the events read so far produced, kept or not.
    pub fn warning_count(&self) -> u64 {
        self.warning_count
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
                let max = DEFAULT_MAX_RECORD;
                // A line that lies whole in the reader's buffer is converted where it is;
                // only one that straddles the buffer's end is copied out first.
                let avail = match reader.fill_buf() {
                    Ok(a) => a,
                    Err(e) => {
                        *done = true;
                        return Some(Err(e.into()));
                    }
                };
                if avail.is_empty() {
                    *done = true;
                    return None;
                }
                let (text, in_place): (&[u8], usize) = match memchr::memchr(b'\n', avail) {
                    Some(end) if end < max => (&avail[..=end], end + 1),
                    _ => {
                        buf.clear();
                        let read = reader.by_ref().take(max as u64 + 1).read_until(b'\n', buf);
                        if let Err(e) = read {
                            *done = true;
                            return Some(Err(e.into()));
                        }
                        if buf.len() > max {
                            *done = true;
                            return Some(Err(BepFileError::LineTooLong { line: *line, max }));
                        }
                        if buf.last() != Some(&b'\n') {
                            *done = true;
                            return Some(Err(BepFileError::TruncatedLine { line: *line }));
                        }
                        (&buf[..], 0)
                    }
                };
                let blank = text.iter().all(u8::is_ascii_whitespace);
                let line_no = *line;
                let converted = (!blank).then(|| json_event_to_binary(text));
                if in_place > 0 {
                    reader.consume(in_place);
                }
                let Some(converted) = converted else {
                    continue;
                };
                return Some(match converted {
                    Ok((event, warnings)) => {
                        self.warning_count += warnings.len() as u64;
                        let room = MAX_KEPT_WARNINGS.saturating_sub(self.warnings.len());
                        self.warnings
                            .extend(warnings.into_iter().take(room).map(|w| ConversionWarning {
                                line: line_no,
                                field: w.field,
                                reason: w.reason,
                            }));
                        Ok(event)
                    }
                    Err(reason) => {
                        *done = true;
                        Err(BepFileError::NotBepJson {
                            line: line_no,
                            reason,
                        })
                    }
                });
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
    fn a_field_that_does_not_fit_is_a_warning_with_its_line_not_an_error() {
        let file = concat!(
            "{\"id\":{\"started\":{}},\"started\":{\"uuid\":\"u\"}}\n",
            "\n",
            "{\"id\":{\"testSummary\":{\"label\":\"//:t\"}},",
            "\"testSummary\":{\"overallStatus\":\"NO_SUCH_STATUS\",\"totalRunCount\":2}}\n",
            "{\"id\":{\"testSummary\":{\"label\":\"//:u\"}},",
            "\"testSummary\":{\"overallStatus\":\"BLAZE_HALTED_BEFORE_TESTING\"}}\n",
        );
        let mut r = BepFileReader::open(file.as_bytes()).unwrap();
        let events: Vec<Vec<u8>> = (&mut r).collect::<Result<_, _>>().unwrap();
        assert_eq!(events.len(), 3, "every event is kept");
        assert_eq!(r.warning_count(), 1);
        let w = &r.warnings()[0];
        assert_eq!((w.line, w.field.as_str()), (3, "testSummary.overallStatus"));
        assert!(
            w.to_string()
                .starts_with("line 3: field testSummary.overallStatus"),
            "{w}"
        );
        use proof_proto::bep::build_event::Payload;
        let summary = |e: &[u8]| match <proof_proto::bep::BuildEvent as prost::Message>::decode(e)
            .unwrap()
            .payload
        {
            Some(Payload::TestSummary(s)) => s,
            p => panic!("{p:?}"),
        };
        // The rest of the event survives; the older name of status 8 parses.
        assert_eq!(summary(&events[1]).total_run_count, 2);
        assert_eq!(summary(&events[2]).overall_status, 8);
    }

    #[test]
    fn kept_warnings_are_capped_and_counted() {
        let line = "{\"id\":{\"progress\":{\"opaqueCount\":\"x\"}}}\n";
        let file = line.repeat(MAX_KEPT_WARNINGS + 5);
        let mut r = BepFileReader::open(file.as_bytes()).unwrap();
        assert_eq!((&mut r).count(), MAX_KEPT_WARNINGS + 5);
        assert_eq!(r.warning_count(), MAX_KEPT_WARNINGS as u64 + 5);
        assert_eq!(r.warnings().len(), MAX_KEPT_WARNINGS);
        assert_eq!(
            r.take_warnings().last().unwrap().line,
            MAX_KEPT_WARNINGS as u64
        );
    }

    /// The binary real streams (in the shared folder: Bazel 6.0.0-pre and
    /// 8.2.1) fit the schema as the JSON ones do (zero warnings: the corpus
    /// test of proof-evidence): every field of every event decodes with our
    /// number and wire type, and the only fields the schema does not declare
    /// are those it leaves out on purpose (docs/wire-facts.md §8.2).
    #[test]
    fn binary_real_streams_fit_the_schema() {
        use prost_reflect::{DynamicMessage, ReflectMessage, Value};
        use std::collections::BTreeSet;
        /// Message full name and field number of every field not declared.
        fn undeclared(m: &DynamicMessage, out: &mut BTreeSet<(String, u32)>) {
            let name = m.descriptor().full_name().to_string();
            out.extend(m.unknown_fields().map(|u| (name.clone(), u.number())));
            let mut visit = |v: &Value| {
                if let Value::Message(sub) = v {
                    undeclared(sub, out);
                }
            };
            for (_, v) in m.fields() {
                match v {
                    Value::List(l) => l.iter().for_each(&mut visit),
                    Value::Map(map) => map.values().for_each(&mut visit),
                    v => visit(v),
                }
            }
        }
        const LEFT_OUT: &[(&str, u32)] = &[
            ("build_event_stream.BuildMetrics", 2),
            ("build_event_stream.BuildMetrics", 8),
            ("build_event_stream.BuildMetrics", 9),
            ("build_event_stream.BuildMetrics", 11),
            ("build_event_stream.BuildMetrics", 12),
            ("build_event_stream.BuildMetrics.PackageMetrics", 2),
            ("build_event_stream.ActionExecuted", 10),
        ];
        let dir = proof_fixtures::real_dir();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path().join("bep.bin"))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(files.len() >= 2, "{files:?}");
        for f in files {
            let (format, events) = read_all(f.to_str().unwrap()).unwrap();
            assert_eq!(format, BepFormat::Binary);
            let mut found = BTreeSet::new();
            for (i, e) in events.iter().enumerate() {
                let m = DynamicMessage::decode(bep_descriptor().clone(), &e[..])
                    .unwrap_or_else(|err| panic!("{}: event {i}: {err}", f.display()));
                undeclared(&m, &mut found);
            }
            let unexpected: Vec<_> = found
                .iter()
                .filter(|(m, n)| !LEFT_OUT.contains(&(m.as_str(), *n)))
                .collect();
            assert!(unexpected.is_empty(), "{}: {unexpected:?}", f.display());
            assert!(
                !found.is_empty(),
                "{}: memory_metrics at least",
                f.display()
            );
        }
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
