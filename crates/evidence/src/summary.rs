//! The text form of Bazel's process summary, `N processes: a internal, b
//! remote.`, as printed in Progress stderr (`INFO: ` prefixed, possibly with
//! ANSI escapes) and stored verbatim in the "process stats" BuildToolLogs
//! entry.

use std::collections::BTreeMap;

/// A parsed summary: Bazel's total and each `<count> <runner name>` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSummary {
    pub total: u64,
    pub runners: BTreeMap<String, u64>,
}

/// Parses `N process[es].` or `N process[es]: c1 name1, c2 name2.` (an
/// optional leading `INFO: ` is accepted). Surrounding whitespace is ignored;
/// anything else makes the line not a summary (`None`).
pub fn parse_process_summary(line: &str) -> Option<ProcessSummary> {
    let line = line.trim();
    let line = line.strip_prefix("INFO: ").unwrap_or(line);
    let (total, rest) = split_number(line)?;
    let rest = rest
        .strip_prefix(" processes")
        .or_else(|| rest.strip_prefix(" process"))?;
    let rest = rest.strip_suffix('.')?;
    let mut runners = BTreeMap::new();
    if !rest.is_empty() {
        let list = rest.strip_prefix(": ")?;
        for item in list.split(", ") {
            let (count, name) = split_number(item)?;
            let name = name.strip_prefix(' ')?;
            if name.is_empty() || name.trim() != name {
                return None;
            }
            let slot = runners.entry(name.to_string()).or_insert(0u64);
            *slot = slot.saturating_add(count);
        }
    }
    Some(ProcessSummary { total, runners })
}

fn split_number(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (num, rest) = s.split_at(digits);
    Some((num.parse().ok()?, rest))
}

/// Removes ANSI escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL/ST`,
/// and two-byte `ESC x`) from terminal text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Accumulates Progress stderr chunks (a line may be split across events)
/// and remembers the last process summary line seen.
#[derive(Debug, Default)]
pub(crate) struct ProgressScanner {
    partial: String,
    pub(crate) last: Option<ProcessSummary>,
}

/// Longest unterminated line kept between chunks; a summary line is short.
const MAX_PARTIAL: usize = 4096;

impl ProgressScanner {
    pub(crate) fn push(&mut self, chunk: &str) {
        if chunk.is_empty() {
            return;
        }
        self.partial.push_str(chunk);
        let buffered = std::mem::take(&mut self.partial);
        let mut rest = buffered.as_str();
        while let Some(pos) = rest.find(['\n', '\r']) {
            let (line, tail) = rest.split_at(pos);
            self.line(line);
            rest = tail.get(1..).unwrap_or("");
        }
        let mut keep = rest;
        if keep.len() > MAX_PARTIAL {
            let mut cut = keep.len() - MAX_PARTIAL;
            while !keep.is_char_boundary(cut) {
                cut += 1;
            }
            keep = &keep[cut..];
        }
        self.partial = keep.to_string();
    }

    pub(crate) fn finish(&mut self) {
        let rest = std::mem::take(&mut self.partial);
        self.line(&rest);
    }

    fn line(&mut self, line: &str) {
        let clean = if line.contains('\u{1b}') {
            strip_ansi(line)
        } else {
            line.to_string()
        };
        if !clean.contains("process") {
            return;
        }
        // Only Bazel's own INFO line counts; arbitrary program output that
        // merely mentions processes does not.
        if clean.trim_start().starts_with("INFO: ") {
            if let Some(s) = parse_process_summary(&clean) {
                self.last = Some(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runners(items: &[(&str, u64)]) -> BTreeMap<String, u64> {
        items.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    #[test]
    fn parses_all_summary_shapes() {
        let s = parse_process_summary("18 processes: 10 internal, 8 remote.").unwrap();
        assert_eq!(s.total, 18);
        assert_eq!(s.runners, runners(&[("internal", 10), ("remote", 8)]));
        let s = parse_process_summary("INFO: 1 process: 1 remote.\n").unwrap();
        assert_eq!((s.total, s.runners), (1, runners(&[("remote", 1)])));
        let s = parse_process_summary("0 processes.").unwrap();
        assert_eq!((s.total, s.runners.len()), (0, 0));
        let s = parse_process_summary(
            "INFO: 51 processes: 3 action cache hit, 8 remote cache hit, 4 internal, 36 remote.",
        )
        .unwrap();
        assert_eq!(s.runners["remote cache hit"], 8);
        assert_eq!(s.runners["action cache hit"], 3);
        assert_eq!(s.runners["remote"], 36);
        for bad in [
            "processes: 1 remote.",
            "18 processes: 10 internal, 8 remote",
            "18 processes: ten internal.",
            "18 processes:10 internal.",
            "INFO: Build completed successfully, 18 total actions",
            "18 processes: 8  remote.",
        ] {
            assert_eq!(parse_process_summary(bad), None, "{bad}");
        }
    }

    #[test]
    fn strips_ansi_and_joins_split_chunks() {
        assert_eq!(
            strip_ansi("\u{1b}[32mINFO: \u{1b}[0m2 processes: 2 remote.\u{1b}[1A\u{1b}[K"),
            "INFO: 2 processes: 2 remote."
        );
        let mut p = ProgressScanner::default();
        p.push("\u{1b}[32mINFO: \u{1b}[0m5 proc");
        assert_eq!(p.last, None);
        p.push("esses: 5 remote.\nINFO: Build completed successfully\n");
        assert_eq!(p.last.as_ref().unwrap().runners, runners(&[("remote", 5)]));
        // Output of a test that merely prints such text without INFO: is ignored.
        p.push("99 processes: 99 remote.\n");
        p.finish();
        assert_eq!(p.last.unwrap().total, 5);
    }
}
