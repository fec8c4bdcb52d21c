//! The forgery the trust reviews replay against the server: a real local build of
//! the example spoke, edited to claim that it ran remotely (issue #10, [trust 3],
//! [web]). Each test adds its own edits (an id, a repo, rewritten URIs) around it.

use proof_proto::bep::{build_event::Payload, file, BuildEvent};
use proof_proto::command_line::{command_line_section::SectionType, Option as ClOption};

/// A pinned worker image the forgeries claim.
pub const IMAGE: &str = "docker://example.invalid/worker@sha256:8621c0a36753232616aae4571118fc3f48e9ef17ddd36c18ce0f4995d4722217";

/// What [`claim_remote`] changed in one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The progress line of the process summary: `linux-sandbox` became `remote`.
    Progress,
    /// The "process stats" build tool log, likewise.
    ProcessStats,
    /// The canonical command line gained `--remote_executor`, a pinned
    /// `container-image` and `--spawn_strategy=remote`.
    CommandLine,
}

/// Makes one event of a local build claim remote execution on `executor`.
pub fn claim_remote(ev: &mut BuildEvent, executor: &str) -> Option<Claimed> {
    match ev.payload.as_mut()? {
        Payload::Progress(p) if p.stderr.contains(" processes: ") => {
            p.stderr = p.stderr.replace("linux-sandbox", "remote");
            Some(Claimed::Progress)
        }
        Payload::BuildToolLogs(logs) => {
            let mut edited = None;
            for log in logs.log.iter_mut().filter(|l| l.name == "process stats") {
                if let Some(file::File::Contents(c)) = &mut log.file {
                    let text = String::from_utf8(c.clone()).expect("process stats are text");
                    assert!(text.contains("linux-sandbox"), "{text}");
                    *c = text.replace("linux-sandbox", "remote").into_bytes();
                    edited = Some(Claimed::ProcessStats);
                }
            }
            edited
        }
        Payload::StructuredCommandLine(cl) if cl.command_line_label == "canonical" => {
            let section = cl
                .sections
                .iter_mut()
                .find(|s| s.section_label == "command options")
                .expect("a canonical command line has command options");
            let Some(SectionType::OptionList(list)) = &mut section.section_type else {
                panic!("no option list")
            };
            for (name, value) in [
                ("remote_executor", executor.to_string()),
                (
                    "remote_default_exec_properties",
                    format!("container-image={IMAGE}"),
                ),
                ("spawn_strategy", "remote".to_string()),
            ] {
                list.option.push(ClOption {
                    combined_form: format!("--{name}={value}"),
                    option_name: name.into(),
                    option_value: value,
                    ..ClOption::default()
                });
            }
            Some(Claimed::CommandLine)
        }
        _ => None,
    }
}

/// The issue #10 forgery of the real local-only spoke run (fixture
/// `local-only`) under `id`, as the events a client would stream: every
/// [`claim_remote`] edit (the process summary says "8 remote", the
/// canonical command line gains `--remote_executor`, a pinned
/// container-image and `--spawn_strategy=remote`), BuildStarted's uuid set
/// to `id`. Panics when the fixture no longer gives those 3 claims and one
/// BuildStarted.
pub fn forged_local_only(executor: &str, id: &str) -> Vec<bytes::Bytes> {
    use prost::Message;
    let mut claimed = Vec::new();
    let mut started = 0;
    let out = crate::delimited_records(&crate::fixture("local-only", "bep.bin"))
        .into_iter()
        .map(|bytes| {
            let mut ev = BuildEvent::decode(bytes.as_slice()).expect("a BEP record");
            if let Some(Payload::Started(s)) = ev.payload.as_mut() {
                s.uuid = id.to_string();
                started += 1;
            }
            claimed.extend(claim_remote(&mut ev, executor));
            bytes::Bytes::from(ev.encode_to_vec())
        })
        .collect();
    assert_eq!(
        (claimed.len(), started),
        (3, 1),
        "the fixture changed shape: {claimed:?}"
    );
    out
}
