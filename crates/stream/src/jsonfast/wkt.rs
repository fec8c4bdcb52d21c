//! The well-known types this path reads: google.protobuf.Timestamp and
//! Duration, as prost-reflect reads them.

/// The range prost-reflect accepts for a google.protobuf.Timestamp
/// (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z) and a Duration.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;
const MAX_DURATION_NANOS: u32 = 999_999_999;

/// A JSON google.protobuf.Timestamp as prost-reflect reads it: a strict
/// RFC 3339 string, parsed by prost-types, in range.
pub(super) fn timestamp(v: &str) -> Option<prost_types::Timestamp> {
    if !strict_rfc3339(v.as_bytes()) {
        return None;
    }
    let t: prost_types::Timestamp = v.parse().ok()?;
    (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS)
        .contains(&t.seconds)
        .then_some(t)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, the form prost-reflect
/// insists on before prost-types parses the string.
fn strict_rfc3339(v: &[u8]) -> bool {
    let mut i = 0;
    let digits = |n: usize, i: &mut usize| {
        let ok = v
            .get(*i..*i + n)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit));
        *i += n;
        ok
    };
    let char = |c: u8, i: &mut usize| {
        let ok = v.get(*i) == Some(&c);
        *i += 1;
        ok
    };
    if !(digits(4, &mut i)
        && char(b'-', &mut i)
        && digits(2, &mut i)
        && char(b'-', &mut i)
        && digits(2, &mut i)
        && char(b'T', &mut i)
        && digits(2, &mut i)
        && char(b':', &mut i)
        && digits(2, &mut i)
        && char(b':', &mut i)
        && digits(2, &mut i))
    {
        return false;
    }
    if v.get(i) == Some(&b'.') {
        let n = v[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    match v.get(i) {
        Some(b'Z') => i + 1 == v.len(),
        Some(b'+' | b'-') => {
            i += 1;
            digits(2, &mut i) && char(b':', &mut i) && digits(2, &mut i) && i == v.len()
        }
        _ => false,
    }
}

/// A JSON google.protobuf.Duration as prost-reflect reads it: parsed by
/// prost-types, in range.
pub(super) fn duration(v: &str) -> Option<prost_types::Duration> {
    let d: prost_types::Duration = v.parse().ok()?;
    (d.seconds.unsigned_abs() <= MAX_DURATION_SECONDS
        && d.nanos.unsigned_abs() <= MAX_DURATION_NANOS)
        .then_some(d)
}
