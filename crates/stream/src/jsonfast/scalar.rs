//! Scalar values: JSON numbers, strings and booleans checked against the
//! field's type as the general path's visitors do, and encoded.

use crate::delimited::encode_varint;

use super::{
    conv::{key, put_len, put_message, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT},
    plan::{FieldPlan, Ty},
    planner::plan,
    wkt::{duration, timestamp},
    GiveUp,
};

/// A singular scalar field's value.
pub(super) fn scalar(f: &FieldPlan, s: Scalar, dst: &mut Vec<u8>) -> Result<(), GiveUp> {
    if f.repeated {
        return Err(GiveUp);
    }
    if matches!(f.ty, Ty::Timestamp | Ty::Duration) {
        let Scalar::Str(v) = s else {
            return Err(GiveUp);
        };
        let v = std::str::from_utf8(v).map_err(|_| GiveUp)?;
        // What prost-reflect does (the same checks, the same parser, the
        // same fields), without a dynamic message.
        key(f.number, WIRE_LEN, dst);
        if f.ty == Ty::Timestamp {
            put_message(&timestamp(v).ok_or(GiveUp)?, dst);
        } else {
            put_message(&duration(v).ok_or(GiveUp)?, dst);
        }
        return Ok(());
    }
    if f.ty == Ty::String {
        let Scalar::Str(v) = s else {
            return Err(GiveUp);
        };
        if f.presence || !v.is_empty() {
            put_len(f.number, v, dst);
        }
        return Ok(());
    }
    if f.ty == Ty::Bytes {
        let Scalar::Str(v) = s else {
            return Err(GiveUp);
        };
        let v = base64(v)?;
        if f.presence || !v.is_empty() {
            put_len(f.number, &v, dst);
        }
        return Ok(());
    }
    let (n, mut is_default) = number(f.ty, &s).ok_or(GiveUp)?;
    if let (Ty::Enum(_), Num::Varint(v)) = (f.ty, &n) {
        is_default = *v == f.enum_default as u64;
    }
    if f.presence || !is_default {
        key(f.number, wire(&n), dst);
        put_num(&n, dst);
    }
    Ok(())
}

/// A scalar read from JSON, before it is checked against the field's type.
pub(super) enum Scalar<'a> {
    Bool(bool),
    U64(u64),
    I64(i64),
    /// UTF-8, checked.
    Str(&'a [u8]),
}

/// A scalar value, encoded as the field's type wants it.
pub(super) enum Num {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
}

/// Converts `s` as the general path's visitors do; `None`: a value it
/// refuses (or one this path leaves to it). The flag says the value is the
/// type's default.
pub(super) fn number(ty: Ty, s: &Scalar) -> Option<(Num, bool)> {
    match ty {
        Ty::Double => {
            let v = json_f64(s)?;
            Some((Num::Fixed64(v.to_bits()), v == 0.0))
        }
        Ty::Float => {
            let v = json_f32(s)?;
            Some((Num::Fixed32(v.to_bits()), v == 0.0))
        }
        Ty::Bool => match *s {
            Scalar::Bool(b) => Some((Num::Varint(u64::from(b)), !b)),
            _ => None,
        },
        Ty::Enum(e) => {
            let v: i32 = match *s {
                // An unknown name is left to the general path.
                Scalar::Str(name) => plan().enums[e].get(name)?,
                Scalar::I64(v) => i32::try_from(v).ok()?,
                Scalar::U64(v) => i32::try_from(v).ok()?,
                Scalar::Bool(_) => return None,
            };
            Some((Num::Varint(v as u64), false))
        }
        Ty::String
        | Ty::Bytes
        | Ty::Message(_)
        | Ty::StringMap
        | Ty::Timestamp
        | Ty::Duration
        | Ty::Unsupported => None,
        _ => integer(ty, s),
    }
}

/// An integer field's value, encoded for its type.
pub(super) fn integer(ty: Ty, s: &Scalar) -> Option<(Num, bool)> {
    Some(match ty {
        Ty::Int32 => {
            let v: i32 = json_int(s)?;
            (Num::Varint(v as u64), v == 0)
        }
        Ty::Sint32 => {
            let v: i32 = json_int(s)?;
            (
                Num::Varint(u64::from(((v << 1) ^ (v >> 31)) as u32)),
                v == 0,
            )
        }
        Ty::Sfixed32 => {
            let v: i32 = json_int(s)?;
            (Num::Fixed32(v as u32), v == 0)
        }
        Ty::Int64 => {
            let v: i64 = json_int(s)?;
            (Num::Varint(v as u64), v == 0)
        }
        Ty::Sint64 => {
            let v: i64 = json_int(s)?;
            (Num::Varint(((v << 1) ^ (v >> 63)) as u64), v == 0)
        }
        Ty::Sfixed64 => {
            let v: i64 = json_int(s)?;
            (Num::Fixed64(v as u64), v == 0)
        }
        Ty::Uint32 => {
            let v: u32 = json_int(s)?;
            (Num::Varint(u64::from(v)), v == 0)
        }
        Ty::Fixed32 => {
            let v: u32 = json_int(s)?;
            (Num::Fixed32(v), v == 0)
        }
        Ty::Uint64 => {
            let v: u64 = json_int(s)?;
            (Num::Varint(v), v == 0)
        }
        Ty::Fixed64 => {
            let v: u64 = json_int(s)?;
            (Num::Fixed64(v), v == 0)
        }
        _ => return None,
    })
}

/// Integers as JSON numbers or decimal strings. (The general path also
/// takes integral floats such as `1e3`; Bazel does not write them, so they
/// are left to it.)
fn json_int<T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr>(s: &Scalar) -> Option<T> {
    match *s {
        Scalar::Str(v) => std::str::from_utf8(v).ok()?.parse().ok(),
        Scalar::U64(v) => T::try_from(v).ok(),
        Scalar::I64(v) => T::try_from(v).ok(),
        Scalar::Bool(_) => None,
    }
}

/// A double from a JSON number or string (`Infinity`, `-Infinity`, `NaN`
/// included).
fn json_f64(s: &Scalar) -> Option<f64> {
    match *s {
        Scalar::I64(v) => Some(v as f64),
        Scalar::U64(v) => Some(v as f64),
        Scalar::Str(v) => match std::str::from_utf8(v).ok()?.parse::<f64>() {
            Ok(x) => Some(x),
            Err(_) if v == b"Infinity" => Some(f64::INFINITY),
            Err(_) if v == b"-Infinity" => Some(f64::NEG_INFINITY),
            Err(_) if v == b"NaN" => Some(f64::NAN),
            Err(_) => None,
        },
        Scalar::Bool(_) => None,
    }
}

/// A float from a JSON number or string, rounded once from the text (not
/// through f64).
fn json_f32(s: &Scalar) -> Option<f32> {
    match *s {
        Scalar::I64(v) => Some(v as f32),
        Scalar::U64(v) => Some(v as f32),
        Scalar::Str(v) => match std::str::from_utf8(v).ok()?.parse::<f32>() {
            Ok(x) => Some(x),
            Err(_) if v == b"Infinity" => Some(f32::INFINITY),
            Err(_) if v == b"-Infinity" => Some(f32::NEG_INFINITY),
            Err(_) if v == b"NaN" => Some(f32::NAN),
            Err(_) => None,
        },
        Scalar::Bool(_) => None,
    }
}

/// A `bytes` value from its JSON string, as prost-reflect reads it: standard base64, or
/// URL-safe when the standard alphabet fails on `-` or `_`, padding optional, trailing
/// bits allowed. What it refuses the general path reports.
pub(super) fn base64(s: &[u8]) -> Result<Vec<u8>, GiveUp> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, DecodeError, Engine};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    match STANDARD.decode(s) {
        Ok(v) => Ok(v),
        Err(DecodeError::InvalidByte(_, b'-' | b'_')) => URL_SAFE.decode(s).map_err(|_| GiveUp),
        Err(_) => Err(GiveUp),
    }
}

pub(super) fn put_num(n: &Num, out: &mut Vec<u8>) {
    match *n {
        Num::Varint(v) => encode_varint(v, out),
        Num::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Num::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

pub(super) fn wire(n: &Num) -> u32 {
    match n {
        Num::Varint(_) => WIRE_VARINT,
        Num::Fixed32(_) => WIRE_FIXED32,
        Num::Fixed64(_) => WIRE_FIXED64,
    }
}
