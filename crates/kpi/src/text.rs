//! Parsers for the few human-readable lines the KPIs use: the "critical
//! path" BuildToolLogs entry, the `INFO: Elapsed time: …, Critical Path: …`
//! progress line, and signal lines in progress text.

use std::collections::BTreeMap;

/// Removes ANSI escape sequences (`ESC [ … letter`) and carriage returns.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// `2.83s` → 2830.
pub fn seconds_to_ms(s: &str) -> Option<u64> {
    let v: f64 = s.trim().trim_end_matches('s').parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some((v * 1000.0).round() as u64)
}

/// What the first line of the "critical path" log says, e.g.
/// `Critical Path: 2.83s, Remote (96.72% of the time): [parse: 0.32%, queue: 50.64%, …, input files: 11, input bytes: 27183, memory bytes: 0]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CriticalPathLine {
    pub ms: Option<u64>,
    pub remote_pct: Option<f64>,
    /// Every `name: N%` inside the brackets.
    pub breakdown_pct: BTreeMap<String, f64>,
}

pub fn parse_critical_path_line(line: &str) -> Option<CriticalPathLine> {
    let rest = line.trim().strip_prefix("Critical Path:")?;
    let mut out = CriticalPathLine::default();
    let dur = rest.split([',', ' ']).find(|s| !s.is_empty())?;
    out.ms = seconds_to_ms(dur);
    if let Some(at) = rest.find("Remote (") {
        let tail = &rest[at + "Remote (".len()..];
        if let Some(pct) = tail.split('%').next() {
            out.remote_pct = pct.trim().parse().ok();
        }
    }
    if let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) {
        if open < close {
            for part in rest[open + 1..close].split(',') {
                if let Some((name, val)) = part.split_once(':') {
                    if let Some(pct) = val.trim().strip_suffix('%') {
                        if let Ok(v) = pct.trim().parse::<f64>() {
                            out.breakdown_pct.insert(name.trim().to_string(), v);
                        }
                    }
                }
            }
        }
    }
    Some(out)
}

/// `INFO: Elapsed time: 2.712s, Critical Path: 2.12s` → (2712, 2120).
pub fn parse_elapsed_line(line: &str) -> Option<(Option<u64>, Option<u64>)> {
    let at = line.find("Elapsed time:")?;
    let rest = &line[at + "Elapsed time:".len()..];
    let (elapsed, cp) = match rest.split_once("Critical Path:") {
        Some((e, c)) => (e, Some(c)),
        None => (rest, None),
    };
    let elapsed = seconds_to_ms(elapsed.trim().trim_end_matches(','));
    let cp = cp.and_then(|c| seconds_to_ms(c.split_whitespace().next().unwrap_or("")));
    Some((elapsed, cp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_path_line_of_bazel_4_2_3() {
        let l = "Critical Path: 2.83s, Remote (96.72% of the time): [parse: 0.32%, queue: 50.64%, network: 6.07%, upload: 9.35%, setup: 9.28%, process: 5.08%, fetch: 1.24%, retry: 0.00%, processOutputs: 0.81%, other: 13.83%, input files: 11, input bytes: 27183, memory bytes: 0]";
        let p = parse_critical_path_line(l).unwrap();
        assert_eq!(p.ms, Some(2830));
        assert_eq!(p.remote_pct, Some(96.72));
        assert_eq!(p.breakdown_pct["queue"], 50.64);
        assert_eq!(p.breakdown_pct["processOutputs"], 0.81);
        assert!(!p.breakdown_pct.contains_key("input files"));
        assert_eq!(parse_critical_path_line("Elapsed: 3s"), None);
    }

    #[test]
    fn elapsed_line_and_ansi() {
        let l = strip_ansi("\u{1b}[32mINFO: \u{1b}[0mElapsed time: 2.712s, Critical Path: 2.12s\r");
        assert_eq!(parse_elapsed_line(&l), Some((Some(2712), Some(2120))));
        assert_eq!(seconds_to_ms("0.44s"), Some(440));
        assert_eq!(seconds_to_ms("-1s"), None);
    }
}
