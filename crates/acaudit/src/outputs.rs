//! Which targets of a BEP stream have an output file with a given digest:
//! TargetComplete output groups (named sets resolved, nested sets
//! included) and important outputs, and TestResult test action outputs.
//! Only files with a digest count (`bytestream://…/blobs/HASH/SIZE`, read
//! with the evidence's own [`proof_evidence::binding::bytestream_digest`]);
//! source files (no path prefix) are left out, since no action made them.
//! Bounded like the evidence's binding: at most [`MAX_SET_FILES`] files
//! over all named sets.

use std::collections::{BTreeMap, BTreeSet};

use proof_evidence::binding::bytestream_digest;
use proof_proto::bep::{build_event, build_event_id, BuildEvent, File};
use proof_proto::reapi::ActionResult;
use prost::Message;

/// Most file entries kept from NamedSetOfFiles events (over all sets).
pub const MAX_SET_FILES: usize = 1_000_000;

/// Target labels by output digest (`HASH/SIZE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetOutputs {
    by_digest: BTreeMap<String, BTreeSet<String>>,
    /// Why some files were not read (over a bound).
    pub incomplete: Option<String>,
}

fn digest_of(f: &File) -> Option<String> {
    if f.path_prefix.is_empty() {
        // A source file (the test.log of a TestResult has no prefix either
        // in Bazel 4.2.3; test outputs are read without this rule).
        return None;
    }
    match &f.file {
        Some(proof_proto::bep::file::File::Uri(uri)) => {
            bytestream_digest(uri).map(|(h, s)| format!("{h}/{s}"))
        }
        _ => None,
    }
}

impl TargetOutputs {
    /// Reads the stream's events (each one encoded `BuildEvent`); events
    /// that do not decode are skipped (the proof was verified already).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut sets: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        let mut set_files = 0usize;
        let mut incomplete = None;
        // label -> (set ids, direct digests)
        let mut targets: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for bytes in events {
            let Ok(ev) = BuildEvent::decode(bytes) else {
                continue;
            };
            let id = ev.id.as_ref().and_then(|i| i.id.as_ref());
            use build_event::Payload as P;
            match (ev.payload.as_ref(), id) {
                (Some(P::NamedSetOfFiles(s)), Some(build_event_id::Id::NamedSet(sid))) => {
                    if set_files.saturating_add(s.files.len()) > MAX_SET_FILES {
                        incomplete = Some(format!(
                            "the stream lists more than {MAX_SET_FILES} files in its named sets; the rest were not read"
                        ));
                        continue;
                    }
                    set_files += s.files.len();
                    sets.insert(
                        sid.id.clone(),
                        (
                            s.files.iter().filter_map(digest_of).collect(),
                            s.file_sets.iter().map(|n| n.id.clone()).collect(),
                        ),
                    );
                }
                (Some(P::Completed(c)), Some(build_event_id::Id::TargetCompleted(t))) => {
                    let acc = targets.entry(t.label.clone()).or_default();
                    for g in &c.output_group {
                        acc.0.extend(g.file_sets.iter().map(|s| s.id.clone()));
                        acc.1.extend(g.inline_files.iter().filter_map(digest_of));
                    }
                    acc.1
                        .extend(c.important_output.iter().filter_map(digest_of));
                }
                (Some(P::TestResult(r)), Some(build_event_id::Id::TestResult(t))) => {
                    let acc = targets.entry(t.label.clone()).or_default();
                    acc.1
                        .extend(r.test_action_output.iter().filter_map(|f| match &f.file {
                            Some(proof_proto::bep::file::File::Uri(uri)) => {
                                bytestream_digest(uri).map(|(h, s)| format!("{h}/{s}"))
                            }
                            _ => None,
                        }));
                }
                _ => {}
            }
        }
        let mut by_digest: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (label, (set_ids, direct)) in targets {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&str> = set_ids.iter().map(String::as_str).collect();
            let mut digests: Vec<&str> = direct.iter().map(String::as_str).collect();
            while let Some(id) = todo.pop() {
                if !seen.insert(id) {
                    continue;
                }
                if let Some((files, nested)) = sets.get(id) {
                    digests.extend(files.iter().map(String::as_str));
                    todo.extend(nested.iter().map(String::as_str));
                }
            }
            for d in digests {
                by_digest
                    .entry(d.to_string())
                    .or_default()
                    .insert(label.clone());
            }
        }
        TargetOutputs {
            by_digest,
            incomplete,
        }
    }

    /// The targets with an output among `result`'s output files or its
    /// stdout/stderr (a remote test's test.log is its action's stdout),
    /// sorted.
    pub fn targets_of(&self, result: &ActionResult) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let digests = result
            .output_files
            .iter()
            .filter_map(|f| f.digest.as_ref())
            .chain(result.stdout_digest.as_ref())
            .chain(result.stderr_digest.as_ref());
        for d in digests {
            if let Some(labels) = self.by_digest.get(&format!("{}/{}", d.hash, d.size_bytes)) {
                out.extend(labels.iter().cloned());
            }
        }
        out
    }

    /// Digests known.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proof_proto::bep::{
        build_event_id, file, BuildEventId, NamedSetOfFiles, OutputGroup, TargetComplete,
    };

    fn ev(id: build_event_id::Id, payload: build_event::Payload) -> Vec<u8> {
        BuildEvent {
            id: Some(BuildEventId { id: Some(id) }),
            payload: Some(payload),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn out_file(name: &str, hash: &str) -> File {
        File {
            path_prefix: vec!["bazel-out".into(), "k8-fastbuild".into(), "bin".into()],
            name: name.into(),
            file: Some(file::File::Uri(format!(
                "bytestream://127.0.0.1:50051/blobs/{hash}/6"
            ))),
            ..Default::default()
        }
    }

    #[test]
    fn nested_sets_name_their_targets_and_sources_do_not() {
        let h1 = "1".repeat(64);
        let h2 = "2".repeat(64);
        let src = File {
            name: "greeter.c".into(),
            file: Some(file::File::Uri(format!(
                "bytestream://127.0.0.1:50051/blobs/{}/6",
                "3".repeat(64)
            ))),
            ..Default::default()
        };
        let events = [
            ev(
                build_event_id::Id::NamedSet(build_event_id::NamedSetOfFilesId { id: "1".into() }),
                build_event::Payload::NamedSetOfFiles(NamedSetOfFiles {
                    files: vec![out_file("hello.txt", &h1), src],
                    file_sets: vec![build_event_id::NamedSetOfFilesId { id: "2".into() }],
                }),
            ),
            ev(
                build_event_id::Id::NamedSet(build_event_id::NamedSetOfFilesId { id: "2".into() }),
                build_event::Payload::NamedSetOfFiles(NamedSetOfFiles {
                    files: vec![out_file("upper.txt", &h2)],
                    file_sets: vec![],
                }),
            ),
            ev(
                build_event_id::Id::TargetCompleted(build_event_id::TargetCompletedId {
                    label: "//:hello".into(),
                    ..Default::default()
                }),
                build_event::Payload::Completed(TargetComplete {
                    success: true,
                    output_group: vec![OutputGroup {
                        name: "default".into(),
                        file_sets: vec![build_event_id::NamedSetOfFilesId { id: "1".into() }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            ),
        ];
        let t = TargetOutputs::from_events(events.iter().map(Vec::as_slice));
        assert_eq!(t.len(), 2, "{t:?}");
        let r = crate::ledger::tests::result("w", "bazel-out/k8-fastbuild/bin/upper.txt", &h2);
        assert_eq!(
            t.targets_of(&r).into_iter().collect::<Vec<_>>(),
            ["//:hello"]
        );
        let r = crate::ledger::tests::result("w", "x", &"3".repeat(64));
        assert!(t.targets_of(&r).is_empty());
    }
}
