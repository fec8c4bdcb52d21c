//! Tests of the fast path: the plan against prost-reflect's, and every
//! fixture line and many edge cases against the general path.

use super::{
    plan::Plan,
    planner::to_json_name,
    wkt::{duration, timestamp},
    *,
};
use crate::bepfile::json_event_to_binary_general as general;
use prost_reflect::{DynamicMessage, Value};

/// Every line of every BEP JSON file under tests/fixtures (Bazel 4.2.3) and
/// of the real streams in the shared folder (7.1.0 to 9.0.0).
fn fixture_lines() -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .is_some_and(|x| x == "json" || x == "ndjson" || x == "jsonl")
            {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut files = Vec::new();
    walk(&root, &mut files);
    walk(&proof_fixtures::real_dir(), &mut files);
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        let text = std::fs::read(&f).unwrap();
        if !text.starts_with(b"{\"id\"") {
            continue;
        }
        for (i, l) in text.split(|&b| b == b'\n').enumerate() {
            if !l.iter().all(u8::is_ascii_whitespace) {
                lines.push((format!("{}:{}", f.display(), i + 1), l.to_vec()));
            }
        }
    }
    assert!(lines.len() > 300, "only {} fixture lines", lines.len());
    lines
}

/// Whether `m` holds a map field with two or more entries anywhere (the
/// general path writes those in hash order).
fn has_multi_entry_map(m: &DynamicMessage) -> bool {
    fn value(v: &Value) -> bool {
        match v {
            Value::Map(m) => m.len() > 1 || m.values().any(value),
            Value::List(l) => l.iter().any(value),
            Value::Message(m) => has_multi_entry_map(m),
            _ => false,
        }
    }
    m.fields().any(|(_, v)| value(v))
}

/// The fast path's promise: whatever it converts, the general path
/// converts to the same bytes (maps: the same entries).
fn same_as_general(what: &str, line: &[u8]) -> bool {
    let fast = convert(line);
    let slow = general(line);
    if let (Ok(_), Ok((_, warnings))) = (&fast, &slow) {
        assert!(
            warnings.is_empty(),
            "{what}: the fast path took a line the general path warns about: {warnings:?}"
        );
    }
    match (&fast, &slow) {
        (Err(GiveUp), _) => false,
        (Ok(f), Ok((s, _))) if f == s => true,
        (Ok(f), Ok((s, _))) => {
            let desc = crate::bepfile::bep_descriptor();
            let fm = DynamicMessage::decode(desc.clone(), &f[..]).unwrap();
            let sm = DynamicMessage::decode(desc.clone(), &s[..]).unwrap();
            assert!(
                has_multi_entry_map(&sm) && fm == sm,
                "{what}: the fast path wrote other bytes than the general one"
            );
            true
        }
        (Ok(_), Err(e)) => {
            panic!("{what}: the fast path accepted what the general path refuses: {e}")
        }
    }
}

/// A line the fast path takes, and converts as the general path does.
fn taken(line: impl AsRef<[u8]>) {
    let line = line.as_ref();
    let text = String::from_utf8_lossy(line);
    assert!(same_as_general("line", line), "not taken: {text}");
}

/// A line the fast path leaves to the general path.
fn left(line: impl AsRef<[u8]>) {
    let line = line.as_ref();
    let text = String::from_utf8_lossy(line);
    assert!(convert(line).is_err(), "taken: {text}");
}

/// The plan read from the descriptor set as it is (prost-types) is the one
/// prost-reflect's pool of the same set gives: every message, field, type, JSON
/// name, oneof, presence, packing and enum.
#[test]
fn the_plan_from_the_descriptor_set_is_the_plan_from_prost_reflect() {
    let raw = Plan::from_descriptor_set(
        proof_proto::FILE_DESCRIPTOR_SET,
        "build_event_stream.BuildEvent",
    )
    .unwrap();
    assert!(
        raw.msgs.len() > 50 && raw.enums.len() > 5,
        "{} messages, {} enums",
        raw.msgs.len(),
        raw.enums.len()
    );
    let reflected = Plan::build(crate::bepfile::bep_descriptor());
    // Enum names to numbers; prost-reflect lists an alias (two names, one number)
    // in another order, which a lookup by name does not see.
    let sorted = |p: &Plan| -> Vec<Vec<(Box<str>, i32)>> {
        p.enums
            .iter()
            .map(|n| {
                let mut v: Vec<_> = n.entries.iter().map(|(_, k, v)| (k.clone(), *v)).collect();
                v.sort();
                v
            })
            .collect()
    };
    assert_eq!(sorted(&raw), sorted(&reflected));
    for (i, (a, b)) in raw.msgs.iter().zip(&reflected.msgs).enumerate() {
        assert_eq!(a, b, "message {i}");
    }
    assert_eq!(raw.msgs.len(), reflected.msgs.len());
    assert!(Plan::from_descriptor_set(proof_proto::FILE_DESCRIPTOR_SET, "no.Such").is_none());
    assert_eq!(to_json_name("a_b_c"), "aBC");
    assert_eq!(to_json_name("_x__y"), "XY");
}

/// `bytes` (a BuildToolLogs file's contents): base64 as prost-reflect reads it, or
/// left to the general path.
#[test]
fn bytes_are_read_as_the_general_path_reads_them() {
    let line = |contents: &str| {
        format!(
            r#"{{"id":{{"buildToolLogs":{{}}}},"buildToolLogs":{{"log":[{{"name":"x","contents":"{contents}"}}]}}}}"#
        )
    };
    for ok in [
        "MC4xMjM=",       // standard, padded
        "MC4xMjM",        // unpadded
        "-_-_",           // URL-safe
        "MD",             // trailing bits
        "",               // empty (a oneof member: written)
        "\\u004dC4xMjM=", // an escape
    ] {
        taken(line(ok));
    }
    for bad in ["+/-_", "!!!", "MC4xM=jM", "M"] {
        left(line(bad));
        assert!(
            general(line(bad).as_bytes()).is_ok_and(|(_, w)| !w.is_empty()),
            "{bad}"
        );
    }
}

#[test]
fn every_fixture_line_converts_to_the_same_bytes_both_ways() {
    let lines = fixture_lines();
    let fast = lines
        .iter()
        .filter(|(what, l)| same_as_general(what, l))
        .count();
    eprintln!("fast path: {fast} of {} fixture lines", lines.len());
    // The fast path must carry the bulk of real streams.
    assert!(
        fast * 10 >= lines.len() * 9,
        "the fast path took only {fast} of {} lines",
        lines.len()
    );
}

/// The same events with every object's keys in reverse order, with
/// unknown keys, nulls, defaults, strings for numbers: whatever the fast
/// path takes, it converts as the general path does.
#[test]
fn rewritten_fixture_lines_convert_like_the_general_path() {
    fn rewrite(v: &serde_json::Value, how: u32) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::Object(m) => {
                let mut items: Vec<(String, J)> = m
                    .iter()
                    .map(|(k, v)| (k.clone(), rewrite(v, how)))
                    .collect();
                match how {
                    0 => items.reverse(),
                    1 => items.push(("noSuchField".into(), J::from(1))),
                    2 => {
                        if let Some(last) = items.last_mut() {
                            last.1 = J::Null;
                        }
                    }
                    3 => {
                        for (_, v) in &mut items {
                            match v {
                                J::String(_) => *v = J::from(""),
                                J::Number(_) => *v = J::from(0),
                                J::Bool(_) => *v = J::from(false),
                                _ => {}
                            }
                        }
                    }
                    4 => {
                        for (_, v) in &mut items {
                            if let J::Number(n) = v {
                                *v = J::from(n.to_string());
                            } else if let J::String(s) = v {
                                if s.parse::<i64>().is_ok() {
                                    *v = J::from(s.parse::<i64>().unwrap());
                                }
                            }
                        }
                    }
                    _ => {
                        for (_, v) in &mut items {
                            if let J::Number(n) = v {
                                *v = J::from(-n.as_i64().unwrap_or(1) - 1);
                            }
                        }
                    }
                }
                J::Object(items.into_iter().collect())
            }
            J::Array(a) => J::Array(a.iter().map(|v| rewrite(v, how)).collect()),
            v => v.clone(),
        }
    }
    let mut taken = [0usize; 7];
    for (what, line) in fixture_lines() {
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        for (how, n) in taken.iter_mut().enumerate() {
            // 6: the event pretty-printed (whitespace everywhere).
            let l = if how == 6 {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&rewrite(&v, how as u32)).unwrap()
            };
            if same_as_general(&format!("{what} (rewrite {how})"), &l) {
                *n += 1;
            }
        }
    }
    // Reordered keys, undeclared fields, nulls, defaults, numbers as
    // strings, negative numbers and whitespace stay on the fast path.
    assert!(
        taken[0] > 300 && taken[1] > 300 && taken[2] > 150,
        "{taken:?}"
    );
    assert!(
        taken[3] > 250 && taken[4] > 200 && taken[5] > 300,
        "{taken:?}"
    );
    assert!(taken[6] > 300, "{taken:?}");
}

#[test]
fn odd_lines_are_left_to_the_general_path() {
    for line in [
        &br#"{"id":{"started":{}},"id":{"started":{}}}"#[..],
        br#"{"id":null,"started":{"uuid":"x"}}"#,
        br#"{"started":{"uuid":"x"}}"#,
        br#"{"id":{"started":{}},"started":{},"finished":{}}"#,
        br#"{"id":{"started":{}},"finished":{"exitCode":{"code":1.5}}}"#,
        br#"{"id":{"started":{}},"finished":{"exitCode":{"code":1e3}}}"#,
        br#"[1]"#,
        br#"{"id":{"started":{}}} x"#,
        br#"{"id":{"started":{}},"started":{"uuid":7}}"#,
        br#"{"id":{"started":{}},"started":{"startTime":"yesterday"}}"#,
    ] {
        left(line);
    }
    // And what it takes is what the general path gives.
    for line in [
        &br#"{"id":{"started":{}},"lastMessage":true,"started":{"uuid":"u","startTimeMillis":"12"}}"#[..],
        br#"{"last_message":false,"id":{"progress":{"opaqueCount":-3}},"children":[]}"#,
        br#"{"id":{"started":{}},"started":null,"progress":{"stderr":"a\u00e9\n"}}"#,
        br#"{"id":{"started":{}},"started":{"startTime":"2024-05-01T10:00:00.123Z"}}"#,
        br#"{"id":{"testResult":{}},"testResult":{"testAttemptDuration":"1.500s"}}"#,
    ] {
        taken(line);
    }
}

/// What the lexer must read as serde_json does, or leave alone.
#[test]
fn strings_and_numbers_are_read_as_serde_json_reads_them() {
    let ev = |stdout: &str| {
        format!(r#"{{"id":{{"progress":{{"opaqueCount":1}}}},"progress":{{"stdout":{stdout}}}}}"#)
    };
    // Taken, and converted as the general path converts them.
    for s in [
        r#""plain""#,
        r#""""#,
        r#""quote \" backslash \\ slash \/ \b\f\n\r\t""#,
        r#""\u0041\u00e9\u20ac \u003d\u003c""#,
        r#""pair \ud83d\ude00 end""#,
        r#""UPPER \u00C9\uD83D\uDE00""#,
        "\"non-ASCII \u{e9}\u{20ac}\u{1f600} as is\"",
        r#""an escape at the end \n""#,
        r#""0123456789abcdef0123456789abcdef\"0123456789abcdef""#,
        "null",
    ] {
        taken(ev(s));
    }
    // Left to the general path (which refuses them, or reads them its way).
    for s in [
        "\"raw\ttab\"",
        "\"raw \u{1}\"",
        "\"raw \u{1f} in a long string, past the first eight bytes\"",
        r#""lone high \ud83d""#,
        r#""lone high then other \ud83d\u0041""#,
        r#""lone low \ude00""#,
        r#""bad escape \x41""#,
        r#""short \u12""#,
        r#""not hex \u12g4""#,
        r#""unterminated"#,
        r#""ends in a backslash \"#,
        "7",
        "[]",
        "{}",
    ] {
        left(ev(s));
    }
    // Text that is not UTF-8 (serde_json refuses it), inside strings and out.
    for bad in [
        &b"\"\xff\""[..],
        b"\"a\xc3\"",
        b"\"\xc3\\n\"",
        b"\"\\n\xa9\"",
        b"\"overlong \xc0\xaf\"",
        b"\"surrogate \xed\xa0\x80\"",
        b"\"\xe2\x82\"",
        b"\"long enough for a word: \xf0\x9f\x98\"",
        b"\"\xc3\xa9\"\xc3\xa9",
    ] {
        let mut line = br#"{"id":{"progress":{"opaqueCount":1}},"progress":{"stdout":"#.to_vec();
        line.extend_from_slice(bad);
        line.extend_from_slice(b"}}");
        left(&line);
    }
    for good in [
        "\"\u{e9}\\n\u{fc}\"",
        "\"mixed: ASCII, then \u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}, \\u00e9 and \u{1f600} again\"",
        "\"\u{1f600}\"",
    ] {
        taken(ev(good));
    }
    // A name with non-ASCII text: one the schema does not declare.
    let key = "{\"id\":{\"progress\":{\"opaqueCount\":1}},\"progr\u{e9}ss\":{}}";
    taken(key);
    let count = |n: &str| format!(r#"{{"id":{{"progress":{{"opaqueCount":{n}}}}}}}"#);
    for n in [
        "0",
        "7",
        "-7",
        "2147483647",
        "-2147483648",
        "\"12\"",
        "\"-3\"",
    ] {
        taken(count(n));
    }
    for n in [
        "01",
        "-0",
        "-",
        "1.0",
        "1e3",
        "1E3",
        "2147483648",
        "-2147483649",
        "18446744073709551616",
        "-9223372036854775809",
        "12x",
        "+1",
        "tru",
        "nul",
        "\"1.5\"",
    ] {
        left(count(n));
    }
}

/// Every prefix of real lines with escapes (and of the same lines
/// pretty-printed) is left to the general path, which refuses it.
#[test]
fn cut_lines_are_never_taken() {
    let mut cut = 0;
    for (what, line) in fixture_lines()
        .iter()
        .filter(|(_, l)| l.contains(&b'\\') && convert(l).is_ok())
        .take(8)
    {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        for l in [line, &pretty] {
            let whole = l.trim_ascii_end().len();
            for end in 0..whole {
                assert!(convert(&l[..end]).is_err(), "{what}: cut at {end}");
                cut += 1;
            }
            assert!(convert(&l[..whole]).is_ok(), "{what}");
        }
    }
    assert!(cut > 5000, "only {cut} cut lines");
}

/// Timestamps and durations are read as prost-reflect reads them in the
/// general path: the same messages, the same refusals.
#[test]
fn timestamps_and_durations_are_read_as_prost_reflect_reads_them() {
    let pool = crate::bepfile::bep_descriptor().parent_pool();
    let reference = |name: &str, v: &str| {
        let desc = pool.get_message_by_name(name).unwrap();
        let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v);
        DynamicMessage::deserialize(desc, de)
            .ok()
            .map(|m| prost::Message::encode_to_vec(&m))
    };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let digits = |n: u64, next: &mut dyn FnMut(u64) -> u64| {
        (0..n)
            .map(|_| char::from(b'0' + next(10) as u8))
            .collect::<String>()
    };
    let mut stamps: Vec<String> = [
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "0000-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:59-01:00",
        "2024-02-29T12:00:00Z",
        "2023-02-29T12:00:00Z",
        "2024-05-01T10:00:00.123Z",
        "2024-05-01T10:00:00.Z",
        "2024-05-01t10:00:00Z",
        "2024-05-01T10:00:00",
        "2024-05-01T10:00:60Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01 10:00:00Z",
        "+2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00+0100",
        "",
    ]
    .map(String::from)
    .to_vec();
    for _ in 0..20_000 {
        let frac = match next(4) {
            0 => String::new(),
            _ => format!(".{}", digits(next(12), &mut next)),
        };
        let zone = match next(6) {
            0 => format!("+{:02}:{:02}", next(25), next(61)),
            1 => format!("-{:02}:{:02}", next(25), next(61)),
            2 => "z".to_string(),
            3 => String::new(),
            _ => "Z".to_string(),
        };
        stamps.push(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{zone}",
            next(10_000),
            next(14),
            next(33),
            next(25),
            next(61),
            next(62)
        ));
    }
    let mut taken = 0;
    for v in &stamps {
        let ours = timestamp(v).map(|t| prost::Message::encode_to_vec(&t));
        assert_eq!(ours, reference("google.protobuf.Timestamp", v), "{v:?}");
        taken += usize::from(ours.is_some());
    }
    assert!(taken > 5_000, "only {taken} timestamps read");
    let mut durations: Vec<String> = [
        "0s",
        "1s",
        "-1s",
        "1.5s",
        "-1.5s",
        "0.000000001s",
        "1.0000000001s",
        ".5s",
        "1.s",
        "315576000000s",
        "315576000001s",
        "-315576000000.999999999s",
        "1",
        "1S",
        "1ms",
        "+1s",
        "1e3s",
        " 1s",
        "s",
        "",
    ]
    .map(String::from)
    .to_vec();
    for _ in 0..20_000 {
        let secs = match next(3) {
            0 => next(10).to_string(),
            1 => next(400_000_000_000).to_string(),
            _ => digits(1 + next(14), &mut next),
        };
        let frac = match next(3) {
            0 => String::new(),
            _ => format!(".{}", digits(next(12), &mut next)),
        };
        let sign = if next(3) == 0 { "-" } else { "" };
        let unit = if next(8) == 0 { "" } else { "s" };
        durations.push(format!("{sign}{secs}{frac}{unit}"));
    }
    let mut taken = 0;
    for v in &durations {
        let ours = duration(v).map(|d| prost::Message::encode_to_vec(&d));
        assert_eq!(ours, reference("google.protobuf.Duration", v), "{v:?}");
        taken += usize::from(ours.is_some());
    }
    assert!(taken > 5_000, "only {taken} durations read");
}

/// Fields the schema does not declare are skipped, as the general path
/// skips them, once they are checked to be JSON serde_json reads.
#[test]
fn undeclared_fields_are_skipped_like_the_general_path_skips_them() {
    let ev = |extra: &str| {
        format!(
            r#"{{"id":{{"progress":{{"opaqueCount":1}}}},"noSuchField":{extra},"progress":{{"stdout":"x","alsoUnknown":{extra}}}}}"#
        )
    };
    for extra in [
        "1",
        "-2.5",
        "0.000",
        "\"text \\n \\u00e9\"",
        "true",
        "null",
        "[]",
        "{}",
        "[1, \"a\", {\"b\": [null, false]}, [[]]]",
        "{\"a\": {\"a\": 1, \"a\": 2}}",
        "{\"spawn\":{\"code\":\"NON_ZERO_EXIT\",\"spawnExitCode\":2}}",
    ] {
        taken(ev(extra));
    }
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for extra in [
        "1e3".to_string(),
        "1.5E-2".to_string(),
        "01".to_string(),
        "1.".to_string(),
        "-".to_string(),
        "9".repeat(70),
        "\"\\ud800\"".to_string(),
        "[1,]".to_string(),
        "{\"a\" 1}".to_string(),
        "{1: 2}".to_string(),
        "nul".to_string(),
        deep(99),
        deep(200),
    ] {
        left(ev(&extra));
    }
    taken(ev(&deep(90)));
}
