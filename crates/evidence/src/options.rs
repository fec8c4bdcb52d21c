//! Effective Bazel command options, from the best source a stream offers
//! (wire-facts §3.1): the "canonical" structured command line, else
//! `OptionsParsed.cmd_line`, else `BuildStarted.options_description`. The raw
//! rc lines (`--default_override=…`) are never consulted: they list configs
//! that were not activated.

use std::collections::{BTreeMap, BTreeSet};

use proof_proto::command_line::{command_line_section::SectionType, CommandLine};
use serde::{Deserialize, Serialize};

/// Where the effective options were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionSource {
    /// StructuredCommandLine "canonical", section "command options".
    CanonicalCommandLine,
    /// OptionsParsed.cmd_line.
    OptionsParsed,
    /// BuildStarted.options_description (fallback only).
    OptionsDescription,
}

/// Boolean flags whose `--noNAME` form we must recognise.
const BOOLEAN_FLAGS: &[&str] = &[
    "remote_upload_local_results",
    "remote_accept_cached",
    "remote_local_fallback",
];

/// Flags whose values are `NAME=VALUE` headers; only NAME is kept.
pub const HEADER_FLAGS: &[&str] = &[
    "remote_header",
    "remote_exec_header",
    "remote_cache_header",
    "remote_downloader_header",
    "bes_header",
];

/// One option occurrence: name without dashes, value if any.
pub type Opt = (String, Option<String>);

/// Parses one `--name=value` / `--name` / `--noname` argument.
pub fn parse_flag(arg: &str) -> Option<Opt> {
    let body = arg.strip_prefix("--")?;
    if body.is_empty() {
        return None;
    }
    if let Some((name, value)) = body.split_once('=') {
        return Some((name.to_string(), Some(value.to_string())));
    }
    if let Some(name) = body.strip_prefix("no") {
        if BOOLEAN_FLAGS.contains(&name) {
            return Some((name.to_string(), Some("0".to_string())));
        }
    }
    Some((body.to_string(), None))
}

/// The options of a canonical command line's "command options" section, or
/// `None` when the command line has no such section.
pub fn canonical_options(cl: &CommandLine) -> Option<Vec<Opt>> {
    let section = cl
        .sections
        .iter()
        .find(|s| s.section_label == "command options")?;
    let Some(SectionType::OptionList(list)) = &section.section_type else {
        return Some(Vec::new());
    };
    Some(
        list.option
            .iter()
            .filter_map(|o| {
                if o.option_name.is_empty() {
                    parse_flag(&o.combined_form)
                } else if o.option_value.is_empty() && !o.combined_form.contains('=') {
                    // Valueless flag; booleans carry "0"/"1" in option_value.
                    parse_flag(&o.combined_form)
                        .filter(|(n, _)| *n == o.option_name)
                        .or_else(|| Some((o.option_name.clone(), None)))
                } else {
                    Some((o.option_name.clone(), Some(o.option_value.clone())))
                }
            })
            .collect(),
    )
}

/// Splits `options_description` like a POSIX shell would split words
/// (single quotes literal, double quotes with backslash escapes).
pub(crate) fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        _ => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Removes `user:password@` from a `scheme://user:password@host/...` value so
/// no credential ends up in the signed evidence.
pub(crate) fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}{path}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

pub(crate) fn parse_bool(v: Option<&str>) -> Option<bool> {
    match v {
        None | Some("" | "1" | "true" | "yes") => Some(true),
        Some("0" | "false" | "no") => Some(false),
        Some(_) => None,
    }
}

/// Key/value pairs of the legacy `--remote_default_platform_properties`
/// text proto (`properties { name: "k" value: "v" }`).
pub(crate) fn platform_text_properties(text: &str) -> Vec<(String, String)> {
    fn quoted_after<'a>(s: &'a str, key: &str) -> Option<(String, &'a str)> {
        let at = s.find(key)?;
        let rest = s[at + key.len()..].trim_start().strip_prefix(':')?;
        let rest = rest.trim_start().strip_prefix('"')?;
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Some((out, &rest[i + 1..])),
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        out.push(n);
                    }
                }
                c => out.push(c),
            }
        }
        None
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((name, after)) = quoted_after(rest, "name") {
        let Some((value, after)) = quoted_after(after, "value") else {
            break;
        };
        out.push((name, value));
        rest = after;
    }
    out
}

/// The chosen option list with convenience look-ups.
pub(crate) struct Options<'a> {
    pub(crate) opts: &'a [Opt],
}

impl<'a> Options<'a> {
    /// Value of the last occurrence (`Some(None)`: given without a value).
    pub(crate) fn last(&self, name: &str) -> Option<Option<&str>> {
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// Last value, with empty meaning unset.
    pub(crate) fn last_nonempty(&self, name: &str) -> Option<String> {
        self.last(name)
            .flatten()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    pub(crate) fn all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.opts
            .iter()
            .filter(move |(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
    }

    pub(crate) fn exec_properties(&self) -> BTreeMap<String, String> {
        let mut props = BTreeMap::new();
        if let Some(text) = self.last_nonempty("remote_default_platform_properties") {
            props.extend(platform_text_properties(&text));
        }
        for flag in ["remote_default_exec_properties", "remote_exec_properties"] {
            for v in self.all(flag) {
                if let Some((k, v)) = v.split_once('=') {
                    props.insert(k.to_string(), v.to_string());
                }
            }
        }
        props
    }

    pub(crate) fn header_keys(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for flag in HEADER_FLAGS {
            let keys: BTreeSet<String> = self
                .all(flag)
                .filter(|v| !v.is_empty())
                .map(|v| v.split_once('=').map_or(v, |(k, _)| k).to_string())
                .collect();
            if !keys.is_empty() {
                out.insert((*flag).to_string(), keys.into_iter().collect());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_words_urls_and_platform_text() {
        assert_eq!(
            parse_flag("--remote_executor=grpc://h:1"),
            Some(("remote_executor".into(), Some("grpc://h:1".into())))
        );
        assert_eq!(
            parse_flag("--noremote_upload_local_results"),
            Some(("remote_upload_local_results".into(), Some("0".into())))
        );
        assert_eq!(
            parse_flag("--nosandbox_debug"),
            Some(("nosandbox_debug".into(), None))
        );
        assert_eq!(parse_flag("//..."), None);
        assert_eq!(
            shell_words("--a=1 --b='x=y z' \"--c=\\\"q\\\"\"  --d"),
            vec!["--a=1", "--b=x=y z", "--c=\"q\"", "--d"]
        );
        assert_eq!(
            strip_userinfo("grpcs://user:secret@rbe.example:443/x@y"),
            "grpcs://rbe.example:443/x@y"
        );
        assert_eq!(strip_userinfo("grpc://h:1"), "grpc://h:1");
        assert_eq!(
            platform_text_properties(
                r#"properties: { name: "container-image" value: "docker://a/b@sha256:00" } properties { name:"OSFamily" value:"Linux" }"#
            ),
            vec![
                (
                    "container-image".to_string(),
                    "docker://a/b@sha256:00".to_string()
                ),
                ("OSFamily".to_string(), "Linux".to_string())
            ]
        );
    }

    #[test]
    fn header_keys_never_keep_values() {
        let opts: Vec<Opt> = [
            "--remote_header=Authorization=Bearer s3cret",
            "--bes_header=x-api-key=<REDACTED>",
            "--bes_header=<REDACTED>",
            "--remote_header=Authorization=again",
        ]
        .iter()
        .filter_map(|a| parse_flag(a))
        .collect();
        let keys = Options { opts: &opts }.header_keys();
        assert_eq!(keys["remote_header"], vec!["Authorization"]);
        assert_eq!(keys["bes_header"], vec!["<REDACTED>", "x-api-key"]);
        let json = serde_json::to_string(&keys).unwrap();
        assert!(
            !json.contains("s3cret") && !json.contains("again"),
            "{json}"
        );
    }
}
