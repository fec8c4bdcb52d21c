//! The identity of an invocation, derived from its raw BEP events in one
//! streaming pass: what `proof show` prints and the index keeps.

use proof_proto::bep::build_event_id::{Id, PatternExpandedId};
use proof_proto::bep::{BuildFinished, BuildStarted};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::probe::{Probe, ProbeError, ProbeMessage};

/// Bazel's exit code: name and number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCode {
    pub name: String,
    pub code: i32,
}

/// What one invocation was, as its stream says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `BuildStarted.uuid`.
    pub invocation_id: Option<String>,
    /// `BuildStarted.build_tool_version`; null when Bazel did not say (Debian's 4.2.3).
    pub bazel_version: Option<String>,
    pub command: Option<String>,
    pub patterns: Vec<String>,
    pub exit_code: Option<ExitCode>,
    /// RFC 3339, from BuildStarted.
    pub started_at: Option<String>,
    /// RFC 3339, from BuildFinished.
    pub finished_at: Option<String>,
    pub event_count: u64,
    pub build_finished: bool,
    pub last_message: bool,
    /// sha256 of the events in `--build_event_binary_file` form (each event
    /// with its varint length prefix): equals `sha256sum bep.bin` when the
    /// stream is the same.
    pub stream_sha256: String,
}

/// The fields of `build_event_stream.BuildEvent` a summary reads; the rest
/// of an event (command lines, file sets, metrics...) is skipped undecoded.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryEvent {
    #[prost(message, optional, tag = "1")]
    id: Option<SummaryId>,
    #[prost(bool, tag = "20")]
    last_message: bool,
    #[prost(message, optional, tag = "5")]
    started: Option<BuildStarted>,
    #[prost(message, optional, tag = "14")]
    finished: Option<BuildFinished>,
}

/// The one `BuildEventId` variant a summary reads.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryId {
    #[prost(message, optional, tag = "4")]
    pattern: Option<PatternExpandedId>,
}

/// Builds a [`Summary`] one event at a time.
#[derive(Default)]
pub struct SummaryBuilder {
    hasher: Sha256,
    s: Partial,
}

#[derive(Default)]
struct Partial {
    invocation_id: Option<String>,
    bazel_version: Option<String>,
    command: Option<String>,
    patterns: Vec<String>,
    exit_code: Option<ExitCode>,
    started_at: Option<String>,
    finished_at: Option<String>,
    event_count: u64,
    build_finished: bool,
    last_message: bool,
}

/// Formats unix milliseconds (or a protobuf Timestamp) as RFC 3339 UTC.
pub fn rfc3339(seconds: i64, nanos: i32) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(seconds).ok()?;
    let t = t + time::Duration::nanoseconds(i64::from(nanos.clamp(0, 999_999_999)));
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn from_millis(ms: i64) -> Option<String> {
    if ms == 0 {
        return None;
    }
    rfc3339(
        ms.div_euclid(1000),
        (ms.rem_euclid(1000) * 1_000_000) as i32,
    )
}

impl SummaryBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one serialized event. Undecodable bytes still count and are
    /// hashed (the journal keeps them); they just add no facts. Only the
    /// fields a summary reads are decoded (id, last_message, BuildStarted,
    /// BuildFinished), so an event counts for those as long as they, and the
    /// framing of the rest, decode.
    pub fn push(&mut self, event: &[u8]) {
        self.hash(event);
        let Ok(ev) = <SummaryEvent as prost::Message>::decode(event) else {
            return;
        };
        let pattern = ev.id.as_ref().and_then(|i| i.pattern.as_ref());
        self.absorb(ev.last_message, pattern, ev.started, ev.finished);
    }

    /// [`SummaryBuilder::push`] and [`crate::probe::probe`] of one event in one decode (the
    /// file import needs both for every event). An event the probe refuses adds nothing
    /// but is still counted and hashed, as by `push`.
    pub fn push_probed(&mut self, event: &[u8]) -> Result<Probe, ProbeError> {
        self.hash(event);
        crate::probe::shape(event)?;
        let m: ProbeMessage = prost::Message::decode(event)?;
        let probe = Probe::of(&m);
        // As `push`: an event whose BuildFinished does not decode adds no facts.
        let finished = match &m.finished {
            Some(bytes) => match <BuildFinished as prost::Message>::decode(&bytes[..]) {
                Ok(f) => Some(f),
                Err(_) => return Ok(probe),
            },
            None => None,
        };
        let pattern = match m.id.as_ref().and_then(|i| i.id.as_ref()) {
            Some(Id::Pattern(p)) => Some(p),
            _ => None,
        };
        self.absorb(m.last_message, pattern, m.started, finished);
        Ok(probe)
    }

    /// [`SummaryBuilder::push_probed`] for an event this program encoded itself (a line of
    /// a JSON file, converted), whose id is well formed by construction: an event that
    /// is neither BuildStarted, BuildFinished nor a pattern's is read from its outline
    /// (its top-level fields, none decoded) instead of decoded, and gives the same probe
    /// and adds the same facts. Anything else, and anything not in an encoder's plain
    /// form, goes through `push_probed`.
    pub fn push_converted(&mut self, event: &[u8]) -> Result<Probe, ProbeError> {
        const PATTERN: u32 = 4;
        match crate::probe::outline(event) {
            Some(o) if !o.started && !o.finished && o.id_variant != PATTERN => {
                self.hash(event);
                self.absorb(o.last_message, None, None, None);
                Ok(Probe {
                    started_uuid: None,
                    build_finished: false,
                    last_message: o.last_message,
                    kind: crate::probe::variant_name(o.id_variant),
                })
            }
            _ => self.push_probed(event),
        }
    }

    fn hash(&mut self, event: &[u8]) {
        let mut prefix = [0u8; 10];
        let n = {
            let mut w = &mut prefix[..];
            prost::encoding::encode_varint(event.len() as u64, &mut w);
            10 - w.len()
        };
        self.hasher.update(&prefix[..n]);
        self.hasher.update(event);
        self.s.event_count += 1;
    }

    fn absorb(
        &mut self,
        last_message: bool,
        pattern: Option<&PatternExpandedId>,
        started: Option<BuildStarted>,
        finished: Option<BuildFinished>,
    ) {
        if last_message {
            self.s.last_message = true;
        }
        if let Some(p) = pattern {
            if self.s.patterns.is_empty() {
                self.s.patterns.clone_from(&p.pattern);
            }
        }
        if let Some(st) = started {
            self.s.invocation_id = Some(st.uuid);
            self.s.bazel_version = Some(st.build_tool_version).filter(|v| !v.is_empty());
            self.s.command = Some(st.command).filter(|v| !v.is_empty());
            self.s.started_at = st
                .start_time
                .and_then(|t| rfc3339(t.seconds, t.nanos))
                .or_else(|| from_millis(st.start_time_millis));
        }
        if let Some(f) = finished {
            self.s.build_finished = true;
            let code = f.exit_code.unwrap_or_default();
            let name = if code.name.is_empty() && code.code == 0 {
                "SUCCESS".into()
            } else {
                code.name
            };
            self.s.exit_code = Some(ExitCode {
                name,
                code: code.code,
            });
            self.s.finished_at = f
                .finish_time
                .and_then(|t| rfc3339(t.seconds, t.nanos))
                .or_else(|| from_millis(f.finish_time_millis));
        }
    }

    pub fn finish(self) -> Summary {
        let s = self.s;
        Summary {
            invocation_id: s.invocation_id,
            bazel_version: s.bazel_version,
            command: s.command,
            patterns: s.patterns,
            exit_code: s.exit_code,
            started_at: s.started_at,
            finished_at: s.finished_at,
            event_count: s.event_count,
            build_finished: s.build_finished,
            last_message: s.last_message,
            stream_sha256: hex::encode(self.hasher.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delimited::DelimitedReader;

    /// One decode for both ([`SummaryBuilder::push_probed`]) gives what the two separate
    /// ones give, on real streams of Bazel 4.2.3 (every rig scenario), 6.0.0-pre and 8.2.1.
    #[test]
    fn push_probed_is_probe_and_push_in_one() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
        let mut files: Vec<String> = [
            "bazel-6.0.0-pre-build-binary/bep.bin",
            "bazel-8.2.1-binary/bep.bin",
        ]
        .into_iter()
        .map(|f| proof_fixtures::real_file(f).display().to_string())
        .collect();
        for d in std::fs::read_dir(format!("{root}/bazel-4.2.3")).unwrap() {
            let p = d.unwrap().path().join("bep.bin");
            if p.is_file() {
                files.push(p.display().to_string());
            }
        }
        assert!(files.len() >= 7, "{files:?}");
        for f in files {
            let bin = std::fs::read(&f).unwrap();
            let (mut one, mut two) = (SummaryBuilder::new(), SummaryBuilder::new());
            let mut kinds = std::collections::BTreeSet::new();
            for ev in DelimitedReader::new(&bin[..]) {
                let ev = ev.unwrap();
                let p = one.push_probed(&ev).unwrap();
                assert_eq!(p, crate::probe::probe(&ev).unwrap(), "{f}");
                kinds.insert(p.kind);
                two.push(&ev);
            }
            assert!(
                kinds.contains("build_finished") && kinds.len() > 5,
                "{f}: {kinds:?}"
            );
            let s = one.finish();
            assert!(s.invocation_id.is_some() && s.build_finished, "{f}");
            assert_eq!(s, two.finish(), "{f}");
        }
        // Bytes that are not an event: the probe's error, still counted and hashed.
        let mut b = SummaryBuilder::new();
        assert!(b.push_probed(b"\xff\xff").is_err());
        assert_eq!(b.finish().event_count, 1);
    }

    /// Every events file under tests/fixtures (Bazel 4.2.3) and of the real
    /// streams in the shared folder (6.0.0-pre to 9.0.0), JSON and binary, read
    /// as `proof ingest` reads it.
    fn fixture_streams() -> Vec<(String, Vec<Vec<u8>>)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if matches!(
                    p.file_name().and_then(|n| n.to_str()),
                    Some("bep.json" | "bep.ndjson" | "bep.bin")
                ) {
                    out.push(p);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let mut files = Vec::new();
        walk(&root, &mut files);
        walk(&proof_fixtures::real_dir(), &mut files);
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let r = std::io::BufReader::new(std::fs::File::open(&f).unwrap());
                let events = crate::bepfile::BepFileReader::open(r)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                (f.display().to_string(), events)
            })
            .collect()
    }

    /// Read from their outline ([`SummaryBuilder::push_converted`]), real events give
    /// the probes and the summary the full decode gives: every JSON fixture converted
    /// (this program's encoding, the use it is for) and every binary one (Bazel's).
    /// Most events take the outline, or this would test nothing.
    #[test]
    fn push_converted_is_push_probed_on_real_streams() {
        let streams = fixture_streams();
        // 5 rig scenarios × (JSON, binary) and the 8 real streams.
        assert!(streams.len() >= 18, "{}", streams.len());
        let (mut events, mut outlined) = (0, 0);
        for (f, stream) in streams {
            let (mut fast, mut full) = (SummaryBuilder::new(), SummaryBuilder::new());
            for (i, ev) in stream.iter().enumerate() {
                let p = fast.push_converted(ev).unwrap();
                assert_eq!(p, full.push_probed(ev).unwrap(), "{f}: event {i}");
                events += 1;
                outlined += usize::from(
                    crate::probe::outline(ev)
                        .is_some_and(|o| !o.started && !o.finished && o.id_variant != 4),
                );
            }
            let s = fast.finish();
            assert!(s.invocation_id.is_some(), "{f}");
            assert_eq!(s, full.finish(), "{f}");
        }
        assert!(
            outlined * 10 > events * 9,
            "{outlined} of {events} outlined"
        );
    }

    /// Legal but unusual encodings (fields twice, an id of two variants or none, a
    /// group) and malformed ones are left to the full decode, with its outcome.
    #[test]
    fn push_converted_leaves_unusual_events_to_the_full_decode() {
        use prost::encoding::{encode_key, encode_varint, WireType};
        fn field(out: &mut Vec<u8>, number: u32, body: &[u8]) {
            encode_key(number, WireType::LengthDelimited, out);
            encode_varint(body.len() as u64, out);
            out.extend_from_slice(body);
        }
        fn flag(out: &mut Vec<u8>, number: u32, v: u64) {
            encode_key(number, WireType::Varint, out);
            encode_varint(v, out);
        }
        let id = |variant: u32| {
            let mut b = Vec::new();
            field(&mut b, variant, &[]);
            b
        };
        let progress = id(2);
        let mut two_variants = id(2);
        two_variants.extend(id(5));
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut e = Vec::new();
        field(&mut e, 1, &progress);
        field(&mut e, 1, &id(5));
        cases.push(("the id twice", e));
        let mut e = Vec::new();
        field(&mut e, 1, &two_variants);
        cases.push(("an id of two variants", e));
        let mut e = Vec::new();
        field(&mut e, 1, &[]);
        cases.push(("an id of none", e));
        let mut e = Vec::new();
        cases.push(("no id", e.clone()));
        field(&mut e, 1, &progress);
        flag(&mut e, 20, 1);
        flag(&mut e, 20, 0);
        cases.push(("last_message twice", e));
        let mut e = Vec::new();
        field(&mut e, 1, &progress);
        encode_key(7, WireType::StartGroup, &mut e);
        encode_key(7, WireType::EndGroup, &mut e);
        cases.push(("a group", e));
        let mut e = Vec::new();
        field(&mut e, 1, &progress);
        field(&mut e, 3, b"abc");
        e.pop();
        cases.push(("cut short", e));
        let mut e = Vec::new();
        field(&mut e, 1, &progress);
        e.extend([0x00, 0x01]);
        cases.push(("field number 0", e));
        let mut e = Vec::new();
        field(&mut e, 1, &progress);
        encode_key(20, WireType::LengthDelimited, &mut e);
        e.push(0);
        cases.push(("last_message of the wrong wire type", e));
        cases.push(("not an event", b"\xff\xff".to_vec()));
        // The plain form is outlined (so the cases above differ only in what they test).
        let mut plain = Vec::new();
        field(&mut plain, 1, &progress);
        field(&mut plain, 3, b"");
        flag(&mut plain, 20, 1);
        cases.push(("plain", plain));
        for (what, e) in &cases {
            assert_eq!(
                crate::probe::outline(e).is_some(),
                *what == "plain",
                "{what}: {e:x?}"
            );
            let (mut fast, mut full) = (SummaryBuilder::new(), SummaryBuilder::new());
            let (a, b) = (fast.push_converted(e), full.push_probed(e));
            assert_eq!(a.is_ok(), b.is_ok(), "{what}");
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a, b, "{what}");
            }
            assert_eq!(fast.finish(), full.finish(), "{what}");
        }
    }

    #[test]
    fn summary_of_the_real_remote_build() {
        let bin = include_bytes!("../../../tests/fixtures/bazel-4.2.3/remote-build/bep.bin");
        let mut b = SummaryBuilder::new();
        for ev in DelimitedReader::new(&bin[..]) {
            b.push(&ev.unwrap());
        }
        let s = b.finish();
        assert_eq!(
            s.invocation_id.as_deref(),
            Some("0816e8e2-00a1-4628-8d9a-2d2de819df6b")
        );
        assert_eq!(
            s.bazel_version, None,
            "Debian's 4.2.3 leaves build_tool_version empty"
        );
        assert_eq!(s.command.as_deref(), Some("build"));
        assert_eq!(s.patterns, vec!["//...".to_string()]);
        assert_eq!(
            s.exit_code,
            Some(ExitCode {
                name: "SUCCESS".into(),
                code: 0
            })
        );
        assert_eq!(s.event_count, 81);
        assert!(s.build_finished && s.last_message);
        assert_eq!(s.started_at.as_deref(), Some("2026-11-26T23:29:39.867Z"));
        assert_eq!(s.stream_sha256, hex::encode(Sha256::digest(bin)));
    }

    #[test]
    fn failing_build_exit_code() {
        let bin = include_bytes!("../../../tests/fixtures/bazel-4.2.3/failing-build/bep.bin");
        let mut b = SummaryBuilder::new();
        for ev in DelimitedReader::new(&bin[..]) {
            b.push(&ev.unwrap());
        }
        assert_eq!(
            b.finish().exit_code,
            Some(ExitCode {
                name: "BUILD_FAILURE".into(),
                code: 1
            })
        );
    }
}
