//! The command options a tenant's stream declares, read cheaply from the two
//! BEP events that carry the effective options: the structured command line
//! labelled "canonical" and OptionsParsed (wire-facts §2.4).

use proof_evidence::options::{canonical_options, parse_flag, Opt};
use proof_proto::command_line::CommandLine;

#[derive(Clone, PartialEq, prost::Message)]
struct OptionsParsedLite {
    #[prost(string, repeated, tag = "3")]
    cmd_line: Vec<String>,
}

/// `BuildEvent.structured_command_line` and `BuildEvent.options_parsed`.
const STRUCTURED_COMMAND_LINE: u32 = 22;
const OPTIONS_PARSED: u32 = 13;

/// Which event the options came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionsSource {
    CanonicalCommandLine,
    OptionsParsed,
}

impl OptionsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OptionsSource::CanonicalCommandLine => "canonical_command_line",
            OptionsSource::OptionsParsed => "options_parsed",
        }
    }
}

/// The effective values that tenancy checks. Empty strings mean "not set".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOptions {
    pub source: OptionsSource,
    /// Last `--remote_instance_name`.
    pub remote_instance_name: String,
    /// Last `Pool=` of `--remote_default_exec_properties` / `--remote_exec_properties`.
    pub pool: String,
    /// Effective `--remote_upload_local_results` (Bazel's default: true).
    pub remote_upload_local_results: bool,
}

/// The options of one serialized BEP event, if its *payload* is the canonical
/// structured command line or OptionsParsed, whatever its id says (the
/// evidence reads payloads too); `None` for every other event, for a
/// "canonical" command line without a "command options" section (the
/// evidence ignores it as well), and for bytes that do not decode (the
/// server's own parsing rejects those). The payload is found by
/// [`proof_stream::probe::shape`], the one reading of an event's top level that the
/// server's checks and the evidence share: an event of two payloads is none of these.
pub fn command_options(event: &[u8]) -> Option<CommandOptions> {
    let (field, body) = proof_stream::probe::shape(event).ok()?.payload?;
    let (source, opts) = match field {
        STRUCTURED_COMMAND_LINE => {
            let cl: CommandLine = prost::Message::decode(body).ok()?;
            if cl.command_line_label != "canonical" {
                return None;
            }
            (OptionsSource::CanonicalCommandLine, canonical_options(&cl)?)
        }
        OPTIONS_PARSED => {
            let op: OptionsParsedLite = prost::Message::decode(body).ok()?;
            let opts = op.cmd_line.iter().filter_map(|a| parse_flag(a)).collect();
            (OptionsSource::OptionsParsed, opts)
        }
        _ => return None,
    };
    Some(effective(source, &opts))
}

fn effective(source: OptionsSource, opts: &[Opt]) -> CommandOptions {
    let last = |name: &str| {
        opts.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut pool = String::new();
    for (n, v) in opts {
        if n == "remote_default_exec_properties" || n == "remote_exec_properties" {
            if let Some((k, val)) = v.as_deref().and_then(|v| v.split_once('=')) {
                if k == "Pool" {
                    pool = val.to_string();
                }
            }
        }
    }
    let upload = match last("remote_upload_local_results") {
        None | Some(None) => true,
        Some(Some(v)) => !matches!(v.as_str(), "0" | "false" | "no"),
    };
    CommandOptions {
        source,
        remote_instance_name: last("remote_instance_name").flatten().unwrap_or_default(),
        pool,
        remote_upload_local_results: upload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proof_proto::command_line::{
        command_line_section::SectionType, CommandLineSection, Option as ClOption, OptionList,
    };

    /// Fields 22 and 13 of `build_event_stream.BuildEvent`, encoded as Bazel does.
    #[derive(Clone, PartialEq, prost::Message)]
    struct OptionsEvent {
        #[prost(message, optional, tag = "22")]
        structured_command_line: Option<CommandLine>,
        #[prost(message, optional, tag = "13")]
        options_parsed: Option<OptionsParsedLite>,
    }

    fn progress() -> Vec<u8> {
        // BuildEvent.progress (3): { stderr (2): "x" }
        vec![3 << 3 | 2, 3, 2 << 3 | 2, 1, b'x']
    }

    fn canonical(label: &str, flags: &[(&str, &str)]) -> Vec<u8> {
        let cl = CommandLine {
            command_line_label: label.into(),
            sections: vec![
                CommandLineSection {
                    section_label: "executable".into(),
                    section_type: None,
                },
                CommandLineSection {
                    section_label: "command options".into(),
                    section_type: Some(SectionType::OptionList(OptionList {
                        option: flags
                            .iter()
                            .map(|(n, v)| ClOption {
                                combined_form: format!("--{n}={v}"),
                                option_name: n.to_string(),
                                option_value: v.to_string(),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                },
            ],
        };
        prost::Message::encode_to_vec(&OptionsEvent {
            structured_command_line: Some(cl),
            options_parsed: None,
        })
    }

    #[test]
    fn canonical_command_line_gives_the_last_values() {
        let ev = canonical(
            "canonical",
            &[
                ("remote_instance_name", "x"),
                ("remote_default_exec_properties", "Pool=gpu"),
                ("remote_default_exec_properties", "OSFamily=Linux"),
                ("remote_instance_name", "main"),
                ("remote_upload_local_results", "0"),
            ],
        );
        let o = command_options(&ev).unwrap();
        assert_eq!(o.source, OptionsSource::CanonicalCommandLine);
        assert_eq!(o.remote_instance_name, "main");
        assert_eq!(o.pool, "gpu");
        assert!(!o.remote_upload_local_results);
    }

    #[test]
    fn the_original_command_line_is_not_read() {
        assert_eq!(
            command_options(&canonical("original", &[("remote_instance_name", "x")])),
            None
        );
    }

    #[test]
    fn options_parsed_and_defaults() {
        let ev = prost::Message::encode_to_vec(&OptionsEvent {
            structured_command_line: None,
            options_parsed: Some(OptionsParsedLite {
                cmd_line: vec![
                    "--remote_executor=grpc://h:1".into(),
                    "--remote_exec_properties=Pool=big".into(),
                    "--noremote_upload_local_results".into(),
                ],
            }),
        });
        let o = command_options(&ev).unwrap();
        assert_eq!(o.source, OptionsSource::OptionsParsed);
        assert_eq!(o.remote_instance_name, "");
        assert_eq!(o.pool, "big");
        assert!(!o.remote_upload_local_results);
        let empty = prost::Message::encode_to_vec(&OptionsEvent {
            structured_command_line: None,
            options_parsed: Some(OptionsParsedLite { cmd_line: vec![] }),
        });
        let o = command_options(&empty).unwrap();
        assert_eq!((o.remote_instance_name.as_str(), o.pool.as_str()), ("", ""));
        assert!(o.remote_upload_local_results, "Bazel uploads by default");
    }

    #[test]
    fn a_canonical_command_line_without_command_options_is_none() {
        // The evidence ignores it too: it must not count as the checked command line.
        let mut ev: OptionsEvent = prost::Message::decode(
            canonical("canonical", &[("remote_instance_name", "x")]).as_slice(),
        )
        .unwrap();
        ev.structured_command_line
            .as_mut()
            .unwrap()
            .sections
            .truncate(1);
        assert_eq!(command_options(&prost::Message::encode_to_vec(&ev)), None);
    }

    #[test]
    fn other_events_and_garbage_are_none() {
        assert_eq!(command_options(&[]), None);
        assert_eq!(command_options(&[0xff, 0xff, 0xff]), None);
    }

    /// [trust 4] finding 2: the gate read fields 22 and 13 as independent fields, and
    /// merged a repeated 22, while the evidence decodes the real `BuildEvent`, whose
    /// last payload field wins. Such events are now no command line at all (the server
    /// refuses them: `proof_stream::probe::shape`).
    #[test]
    fn oneof_splits_are_not_read_as_a_command_line() {
        let allowed = canonical("canonical", &[("remote_instance_name", "main")]);
        let forbidden = canonical("canonical", &[("remote_instance_name", "other-inst")]);
        // [22: allowed][3: Progress][22: forbidden]: the old gate merged the two 22s
        // (and so judged one of them); the evidence read the forbidden one.
        let split = [allowed.clone(), progress(), forbidden.clone()].concat();
        assert_eq!(command_options(&split), None);
        // [22: {label "x"}][13: OptionsParsed]: the old gate saw a non-canonical command
        // line and never judged the OptionsParsed the evidence reads.
        let decoy = canonical("x", &[]);
        let parsed = prost::Message::encode_to_vec(&OptionsEvent {
            structured_command_line: None,
            options_parsed: Some(OptionsParsedLite {
                cmd_line: vec!["--remote_instance_name=other-inst".into()],
            }),
        });
        assert_eq!(command_options(&[decoy, parsed.clone()].concat()), None);
        // Each part alone is read as before.
        assert_eq!(
            command_options(&allowed).unwrap().remote_instance_name,
            "main"
        );
        assert_eq!(
            command_options(&parsed).unwrap().remote_instance_name,
            "other-inst"
        );
    }
}
