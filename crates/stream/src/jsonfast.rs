//! The fast path from one proto3-JSON BEP event to its binary form: the JSON
//! is read once, as a stream of tokens, and each field is encoded as it is
//! read, guided by a plan made once from the descriptors. No JSON tree and
//! no dynamic message are built.
//!
//! It handles the ordinary shape of what Bazel writes and nothing else: at
//! anything unusual (a field name the schema does not know, a repeated key,
//! two members of one oneof, an enum name the schema does not know, `bytes`,
//! well-known types other than Timestamp and Duration, which prost-reflect
//! parses as in the general path, a map other than string to string, a value
//! of the wrong type, anything malformed) it gives up and the caller converts
//! the line the general, tolerant way
//! ([`super::bepfile::json_event_to_binary_general`]), which also gives the
//! warnings and errors. What it does produce is byte for byte what the
//! general conversion produces: fields in field-number order, defaults of
//! fields without presence left out, packed repeated scalars (tested over
//! every fixture line). Only the order of map entries differs: the general
//! path writes them in hash order (a different order each run), this one in
//! the order of the JSON.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use prost_reflect::{Kind, MessageDescriptor};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::delimited::encode_varint;

/// Why the fast path gave up (never shown to users: the general path runs).
#[derive(Debug)]
pub(crate) struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not handled by the fast JSON path")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Double,
    Float,
    /// Index into `Plan::enums`.
    Enum(usize),
    /// Index into `Plan::msgs`.
    Message(usize),
    /// `map<string, string>`.
    StringMap,
    /// google.protobuf.Timestamp or Duration (a string in JSON), index into
    /// `Plan::wkts`; converted by prost-reflect itself, as in the general path.
    Wkt(usize),
    /// Anything this path leaves to the general one.
    Unsupported,
}

#[derive(Debug)]
struct FieldPlan {
    number: u32,
    ty: Ty,
    repeated: bool,
    packed: bool,
    presence: bool,
    oneof: Option<usize>,
    enum_default: i32,
}

/// FNV-1a: field names are short and trusted to be few; SipHash cost more
/// than the rest of the key lookup.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

#[derive(Debug, Default)]
struct MsgPlan {
    /// (JSON key, field index): JSON names first, then proto names, as the
    /// general path looks them up. A scan beats hashing for these few short keys.
    by_key: Vec<(Box<str>, usize)>,
    fields: Vec<FieldPlan>,
    oneofs: usize,
}

#[derive(Debug, Default)]
struct Plan {
    msgs: Vec<MsgPlan>,
    enums: Vec<FnvMap<Box<str>, i32>>,
    wkts: Vec<MessageDescriptor>,
}

impl Plan {
    fn build(root: &MessageDescriptor) -> Plan {
        let mut plan = Plan::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut enum_index: HashMap<String, usize> = HashMap::new();
        let mut todo = vec![root.clone()];
        index.insert(root.full_name().to_string(), 0);
        plan.msgs.push(MsgPlan::default());
        while let Some(desc) = todo.pop() {
            let me = index[desc.full_name()];
            let mut mp = MsgPlan {
                oneofs: desc.oneofs().count(),
                ..MsgPlan::default()
            };
            for f in desc.fields() {
                let mut enum_default = 0;
                let ty = match f.kind() {
                    _ if f.is_group() => Ty::Unsupported,
                    Kind::Message(m) if f.is_map() => {
                        let (k, v) = (m.map_entry_key_field(), m.map_entry_value_field());
                        if matches!(k.kind(), Kind::String) && matches!(v.kind(), Kind::String) {
                            Ty::StringMap
                        } else {
                            Ty::Unsupported
                        }
                    }
                    Kind::Message(m)
                        if matches!(
                            m.full_name(),
                            "google.protobuf.Timestamp" | "google.protobuf.Duration"
                        ) =>
                    {
                        let i = match plan.wkts.iter().position(|w| *w == m) {
                            Some(i) => i,
                            None => {
                                plan.wkts.push(m.clone());
                                plan.wkts.len() - 1
                            }
                        };
                        Ty::Wkt(i)
                    }
                    Kind::Message(m) if m.full_name().starts_with("google.protobuf.") => {
                        Ty::Unsupported
                    }
                    Kind::Message(m) => {
                        let next = plan.msgs.len();
                        let i = *index.entry(m.full_name().to_string()).or_insert_with(|| {
                            todo.push(m.clone());
                            next
                        });
                        if i == next {
                            plan.msgs.push(MsgPlan::default());
                        }
                        Ty::Message(i)
                    }
                    Kind::Enum(e) if e.full_name().starts_with("google.protobuf.") => {
                        Ty::Unsupported
                    }
                    Kind::Enum(e) => {
                        enum_default = e.default_value().number();
                        let next = plan.enums.len();
                        let i = *enum_index.entry(e.full_name().to_string()).or_insert(next);
                        if i == next {
                            plan.enums
                                .push(e.values().map(|v| (v.name().into(), v.number())).collect());
                        }
                        Ty::Enum(i)
                    }
                    Kind::Double => Ty::Double,
                    Kind::Float => Ty::Float,
                    Kind::Int32 => Ty::Int32,
                    Kind::Int64 => Ty::Int64,
                    Kind::Uint32 => Ty::Uint32,
                    Kind::Uint64 => Ty::Uint64,
                    Kind::Sint32 => Ty::Sint32,
                    Kind::Sint64 => Ty::Sint64,
                    Kind::Fixed32 => Ty::Fixed32,
                    Kind::Fixed64 => Ty::Fixed64,
                    Kind::Sfixed32 => Ty::Sfixed32,
                    Kind::Sfixed64 => Ty::Sfixed64,
                    Kind::Bool => Ty::Bool,
                    Kind::String => Ty::String,
                    Kind::Bytes => Ty::Unsupported,
                };
                mp.fields.push(FieldPlan {
                    number: f.number(),
                    ty,
                    repeated: f.is_list(),
                    packed: f.is_packed(),
                    presence: f.supports_presence(),
                    oneof: f
                        .containing_oneof()
                        .and_then(|o| desc.oneofs().position(|x| x.name() == o.name())),
                    enum_default,
                });
            }
            // Like the general path: the JSON name first, then the proto name.
            for (i, f) in desc.fields().enumerate() {
                mp.by_key.push((f.json_name().into(), i));
            }
            for (i, f) in desc.fields().enumerate() {
                if !mp.by_key.iter().any(|(k, _)| **k == *f.name()) {
                    mp.by_key.push((f.name().into(), i));
                }
            }
            plan.msgs[me] = mp;
        }
        plan
    }
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| Plan::build(crate::bepfile::bep_descriptor()))
}

/// Reusable buffers of one nesting level.
#[derive(Default)]
struct Level {
    /// (field number, start, end) of each field's bytes in the destination.
    chunks: Vec<(u32, usize, usize)>,
    seen: Vec<u64>,
    oneofs: Vec<u64>,
    sorted: Vec<u8>,
}

#[derive(Default)]
struct Ctx {
    levels: Vec<Level>,
    packed: Vec<u8>,
    /// The event being written (copied out at its exact size).
    out: Vec<u8>,
}

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn key(number: u32, wire: u32, out: &mut Vec<u8>) {
    encode_varint(u64::from(number << 3 | wire), out);
}

fn test_bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn give_up<E: de::Error>() -> E {
    E::custom(GiveUp)
}

/// Converts one JSON event; `Err` means "use the general path".
pub(crate) fn convert(json: &[u8]) -> Result<Vec<u8>, GiveUp> {
    thread_local! {
        static CTX: std::cell::RefCell<Ctx> = std::cell::RefCell::new(Ctx::default());
    }
    CTX.with(|ctx| {
        let Ok(mut ctx) = ctx.try_borrow_mut() else {
            return Err(GiveUp);
        };
        // One UTF-8 check of the line instead of one per string.
        let json = std::str::from_utf8(json).map_err(|_| GiveUp)?;
        let mut out = std::mem::take(&mut ctx.out);
        out.clear();
        let mut de = serde_json::Deserializer::from_str(json);
        let id_set = MessageSeed {
            ctx: &mut ctx,
            msg: 0,
            depth: 0,
            dst: &mut out,
            tag: None,
            need_id: true,
        }
        .deserialize(&mut de)
        .map_err(|_| GiveUp)?;
        de.end().map_err(|_| GiveUp)?;
        let bin = out.clone();
        ctx.out = out;
        // The general path insists on an "id" object.
        if !id_set {
            return Err(GiveUp);
        }
        Ok(bin)
    })
}

/// One message: a JSON object, written to `dst` (after `tag` and the length
/// when it is a field of another message).
struct MessageSeed<'c> {
    ctx: &'c mut Ctx,
    msg: usize,
    depth: usize,
    dst: &'c mut Vec<u8>,
    tag: Option<u32>,
    /// Report whether field 1 ("id") was set to an object (top level only).
    need_id: bool,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    /// For the top level: whether "id" was set.
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let plan = plan();
        let mp = &plan.msgs[self.msg];
        if self.ctx.levels.len() <= self.depth {
            self.ctx.levels.resize_with(self.depth + 1, Level::default);
        }
        let mut lvl = std::mem::take(&mut self.ctx.levels[self.depth]);
        lvl.chunks.clear();
        lvl.seen.clear();
        lvl.seen.resize(mp.fields.len().div_ceil(64), 0);
        lvl.oneofs.clear();
        lvl.oneofs.resize(mp.oneofs.div_ceil(64), 0);
        // The message is written where it goes: its tag, one byte for its length (widened
        // afterwards if the body needs more), its body.
        let dst = self.dst;
        let len_at = self.tag.map(|tag| {
            key(tag, WIRE_LEN, dst);
            dst.push(0);
            dst.len() - 1
        });
        let body_start = dst.len();
        let mut id_set = false;
        while let Some(i) = map.next_key_seed(KeySeed(mp))? {
            let Some(i) = i else {
                return Err(give_up());
            };
            if test_bit(&lvl.seen, i) {
                return Err(give_up());
            }
            set_bit(&mut lvl.seen, i);
            let f = &mp.fields[i];
            let start = dst.len();
            let set = map.next_value_seed(FieldSeed {
                ctx: &mut *self.ctx,
                f,
                depth: self.depth,
                dst: &mut *dst,
            })?;
            if set {
                if let Some(o) = f.oneof {
                    if test_bit(&lvl.oneofs, o) {
                        return Err(give_up());
                    }
                    set_bit(&mut lvl.oneofs, o);
                }
                if self.need_id && f.number == 1 {
                    id_set = true;
                }
            }
            let end = dst.len();
            if end > start {
                lvl.chunks.push((f.number, start, end));
            }
        }
        // Fields in number order, as protobuf encoders write them.
        if !lvl.chunks.windows(2).all(|w| w[0].0 < w[1].0) {
            lvl.chunks.sort_by_key(|c| c.0);
            lvl.sorted.clear();
            for &(_, s, e) in &lvl.chunks {
                lvl.sorted.extend_from_slice(&dst[s..e]);
            }
            dst.truncate(body_start);
            dst.extend_from_slice(&lvl.sorted);
        }
        if let Some(at) = len_at {
            let len = dst.len() - body_start;
            let n = prost::encoding::encoded_len_varint(len as u64);
            if n > 1 {
                let end = dst.len();
                dst.resize(end + n - 1, 0);
                dst.copy_within(body_start..end, body_start + n - 1);
            }
            let mut slot = &mut dst[at..at + n];
            prost::encoding::encode_varint(len as u64, &mut slot);
        }
        self.ctx.levels[self.depth] = lvl;
        Ok(id_set)
    }
}

/// A JSON key: the index of the field it names, `None` when it names none.
struct KeySeed<'p>(&'p MsgPlan);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        let v = v.as_bytes();
        Ok(self
            .0
            .by_key
            .iter()
            .find(|(k, _)| k.len() == v.len() && k.as_bytes() == v)
            .map(|&(_, i)| i))
    }
}

/// The value of one field, encoded into `dst`; yields whether it is set
/// (false for `null`).
struct FieldSeed<'c> {
    ctx: &'c mut Ctx,
    f: &'static FieldPlan,
    depth: usize,
    dst: &'c mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

/// A scalar read from JSON, before it is checked against the field's type.
enum Scalar<'a> {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'a str),
}

/// A scalar value, encoded as the field's type wants it.
enum Num {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
}

/// Converts `s` as the general path's visitors do; `None`: a value it
/// refuses (or one this path leaves to it).
fn number(ty: Ty, s: &Scalar) -> Option<(Num, bool)> {
    /// Integers as JSON numbers or decimal strings. (The general path also
    /// takes integral floats such as `1e3`; Bazel does not write them, so
    /// they are left to it.)
    fn int<T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr>(s: &Scalar) -> Option<T> {
        match *s {
            Scalar::Str(v) => v.parse().ok(),
            Scalar::U64(v) => T::try_from(v).ok(),
            Scalar::I64(v) => T::try_from(v).ok(),
            Scalar::F64(_) | Scalar::Bool(_) => None,
        }
    }
    let f64_of = |s: &Scalar| -> Option<f64> {
        match *s {
            Scalar::F64(v) => Some(v),
            Scalar::I64(v) => Some(v as f64),
            Scalar::U64(v) => Some(v as f64),
            Scalar::Str(v) => match v.parse::<f64>() {
                Ok(x) => Some(x),
                Err(_) if v == "Infinity" => Some(f64::INFINITY),
                Err(_) if v == "-Infinity" => Some(f64::NEG_INFINITY),
                Err(_) if v == "NaN" => Some(f64::NAN),
                Err(_) => None,
            },
            Scalar::Bool(_) => None,
        }
    };
    Some(match ty {
        Ty::Int32 => {
            let v: i32 = int(s)?;
            (Num::Varint(v as u64), v == 0)
        }
        Ty::Sint32 => {
            let v: i32 = int(s)?;
            (
                Num::Varint(u64::from(((v << 1) ^ (v >> 31)) as u32)),
                v == 0,
            )
        }
        Ty::Sfixed32 => {
            let v: i32 = int(s)?;
            (Num::Fixed32(v as u32), v == 0)
        }
        Ty::Int64 => {
            let v: i64 = int(s)?;
            (Num::Varint(v as u64), v == 0)
        }
        Ty::Sint64 => {
            let v: i64 = int(s)?;
            (Num::Varint(((v << 1) ^ (v >> 63)) as u64), v == 0)
        }
        Ty::Sfixed64 => {
            let v: i64 = int(s)?;
            (Num::Fixed64(v as u64), v == 0)
        }
        Ty::Uint32 => {
            let v: u32 = int(s)?;
            (Num::Varint(u64::from(v)), v == 0)
        }
        Ty::Fixed32 => {
            let v: u32 = int(s)?;
            (Num::Fixed32(v), v == 0)
        }
        Ty::Uint64 => {
            let v: u64 = int(s)?;
            (Num::Varint(v), v == 0)
        }
        Ty::Fixed64 => {
            let v: u64 = int(s)?;
            (Num::Fixed64(v), v == 0)
        }
        Ty::Double => {
            let v = f64_of(s)?;
            (Num::Fixed64(v.to_bits()), v == 0.0)
        }
        Ty::Float => {
            let v = match *s {
                Scalar::F64(v) if v < f64::from(f32::MIN) || v > f64::from(f32::MAX) => {
                    return None
                }
                Scalar::F64(v) => v as f32,
                Scalar::I64(v) => v as f32,
                Scalar::U64(v) => v as f32,
                Scalar::Str(v) => match v.parse::<f32>() {
                    Ok(x) => x,
                    Err(_) if v == "Infinity" => f32::INFINITY,
                    Err(_) if v == "-Infinity" => f32::NEG_INFINITY,
                    Err(_) if v == "NaN" => f32::NAN,
                    Err(_) => return None,
                },
                Scalar::Bool(_) => return None,
            };
            (Num::Fixed32(v.to_bits()), v == 0.0)
        }
        Ty::Bool => match *s {
            Scalar::Bool(b) => (Num::Varint(u64::from(b)), !b),
            _ => return None,
        },
        Ty::Enum(e) => {
            let v: i32 = match *s {
                // An unknown name is left to the general path.
                Scalar::Str(name) => *plan().enums[e].get(name)?,
                Scalar::I64(v) => i32::try_from(v).ok()?,
                Scalar::U64(v) => i32::try_from(v).ok()?,
                _ => return None,
            };
            (Num::Varint(v as u64), false)
        }
        Ty::String | Ty::Message(_) | Ty::StringMap | Ty::Wkt(_) | Ty::Unsupported => return None,
    })
}

fn put_num(n: &Num, out: &mut Vec<u8>) {
    match *n {
        Num::Varint(v) => encode_varint(v, out),
        Num::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Num::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn wire(n: &Num) -> u32 {
    match n {
        Num::Varint(_) => WIRE_VARINT,
        Num::Fixed32(_) => WIRE_FIXED32,
        Num::Fixed64(_) => WIRE_FIXED64,
    }
}

impl FieldSeed<'_> {
    fn scalar<E: de::Error>(self, s: Scalar) -> Result<bool, E> {
        let f = self.f;
        if f.repeated {
            return Err(give_up());
        }
        if let Ty::Wkt(w) = f.ty {
            let Scalar::Str(v) = s else {
                return Err(give_up());
            };
            let de = de::value::StrDeserializer::<de::value::Error>::new(v);
            let m = prost_reflect::DynamicMessage::deserialize(plan().wkts[w].clone(), de)
                .map_err(|_| give_up())?;
            let bytes = prost::Message::encode_to_vec(&m);
            key(f.number, WIRE_LEN, self.dst);
            encode_varint(bytes.len() as u64, self.dst);
            self.dst.extend_from_slice(&bytes);
            return Ok(true);
        }
        if f.ty == Ty::String {
            let Scalar::Str(v) = s else {
                return Err(give_up());
            };
            if f.presence || !v.is_empty() {
                key(f.number, WIRE_LEN, self.dst);
                encode_varint(v.len() as u64, self.dst);
                self.dst.extend_from_slice(v.as_bytes());
            }
            return Ok(true);
        }
        let (n, mut is_default) = number(f.ty, &s).ok_or_else(give_up)?;
        if let (Ty::Enum(_), Num::Varint(v)) = (f.ty, &n) {
            is_default = *v == f.enum_default as u64;
        }
        if f.presence || !is_default {
            key(f.number, wire(&n), self.dst);
            put_num(&n, self.dst);
        }
        Ok(true)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        match self.f.ty {
            Ty::Unsupported => Err(give_up()),
            _ => Ok(false),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.scalar(Scalar::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.scalar(Scalar::U64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.scalar(Scalar::I64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.scalar(Scalar::F64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let f = self.f;
        if !f.repeated || matches!(f.ty, Ty::Unsupported | Ty::StringMap | Ty::Wkt(_)) {
            return Err(give_up());
        }
        if f.packed {
            let mut packed = std::mem::take(&mut self.ctx.packed);
            packed.clear();
            while let Some(s) = seq.next_element_seed(ScalarSeed)? {
                let (n, _) = number(f.ty, &s.as_scalar()).ok_or_else(give_up)?;
                put_num(&n, &mut packed);
            }
            if !packed.is_empty() {
                key(f.number, WIRE_LEN, self.dst);
                encode_varint(packed.len() as u64, self.dst);
                self.dst.extend_from_slice(&packed);
            }
            self.ctx.packed = packed;
            return Ok(true);
        }
        match f.ty {
            Ty::Message(m) => {
                while seq
                    .next_element_seed(MessageSeed {
                        ctx: &mut *self.ctx,
                        msg: m,
                        depth: self.depth + 1,
                        dst: &mut *self.dst,
                        tag: Some(f.number),
                        need_id: false,
                    })?
                    .is_some()
                {}
            }
            Ty::String => {
                while seq
                    .next_element_seed(StrElem {
                        number: f.number,
                        dst: &mut *self.dst,
                    })?
                    .is_some()
                {}
            }
            ty => {
                while let Some(s) = seq.next_element_seed(ScalarSeed)? {
                    let (n, _) = number(ty, &s.as_scalar()).ok_or_else(give_up)?;
                    key(f.number, wire(&n), self.dst);
                    put_num(&n, self.dst);
                }
            }
        }
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let f = self.f;
        match f.ty {
            Ty::Message(m) if !f.repeated => {
                MessageSeed {
                    ctx: self.ctx,
                    msg: m,
                    depth: self.depth + 1,
                    dst: self.dst,
                    tag: Some(f.number),
                    need_id: false,
                }
                .visit_map(map)?;
                Ok(true)
            }
            Ty::StringMap => {
                let mut keys: Vec<String> = Vec::new();
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    // A repeated key: the general path keeps the last one.
                    if keys.iter().any(|seen| *seen == *k) {
                        return Err(give_up());
                    }
                    let OwnedScalar::Str(v) = map.next_value_seed(ScalarSeed)? else {
                        return Err(give_up());
                    };
                    let len = |s: &str| {
                        if s.is_empty() {
                            0
                        } else {
                            1 + prost::encoding::encoded_len_varint(s.len() as u64) + s.len()
                        }
                    };
                    key(f.number, WIRE_LEN, self.dst);
                    encode_varint((len(&k) + len(&v)) as u64, self.dst);
                    for (n, s) in [(1, k.as_ref()), (2, v.as_str())] {
                        if !s.is_empty() {
                            key(n, WIRE_LEN, self.dst);
                            encode_varint(s.len() as u64, self.dst);
                            self.dst.extend_from_slice(s.as_bytes());
                        }
                    }
                    keys.push(k.into_owned());
                }
                Ok(true)
            }
            _ => Err(give_up()),
        }
    }
}

/// One string of a repeated string field, written as it is read.
struct StrElem<'c> {
    number: u32,
    dst: &'c mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for StrElem<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrElem<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        key(self.number, WIRE_LEN, self.dst);
        encode_varint(v.len() as u64, self.dst);
        self.dst.extend_from_slice(v.as_bytes());
        Ok(())
    }
}

/// One element of a list (or a map value): a scalar, owned for the moment
/// it takes to encode it.
enum OwnedScalar {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
}

impl OwnedScalar {
    fn as_scalar(&self) -> Scalar<'_> {
        match self {
            OwnedScalar::Bool(b) => Scalar::Bool(*b),
            OwnedScalar::U64(v) => Scalar::U64(*v),
            OwnedScalar::I64(v) => Scalar::I64(*v),
            OwnedScalar::F64(v) => Scalar::F64(*v),
            OwnedScalar::Str(s) => Scalar::Str(s),
        }
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = OwnedScalar;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<OwnedScalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = OwnedScalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<OwnedScalar, E> {
        Ok(OwnedScalar::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<OwnedScalar, E> {
        Ok(OwnedScalar::U64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<OwnedScalar, E> {
        Ok(OwnedScalar::I64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<OwnedScalar, E> {
        Ok(OwnedScalar::F64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OwnedScalar, E> {
        Ok(OwnedScalar::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<OwnedScalar, E> {
        Ok(OwnedScalar::Str(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bepfile::json_event_to_binary_general as general;
    use prost_reflect::{DynamicMessage, Value};

    /// Every line of every BEP JSON file under tests/fixtures.
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
        let mut taken = [0usize; 6];
        for (what, line) in fixture_lines() {
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            for (how, n) in taken.iter_mut().enumerate() {
                let l = serde_json::to_vec(&rewrite(&v, how as u32)).unwrap();
                if same_as_general(&format!("{what} (rewrite {how})"), &l) {
                    *n += 1;
                }
            }
        }
        // Reordered keys, nulls, defaults, numbers as strings and negative
        // numbers stay on the fast path; unknown fields never do.
        assert!(
            taken[0] > 300 && taken[2] > 150 && taken[3] > 250 && taken[4] > 200 && taken[5] > 300,
            "{taken:?}"
        );
        assert_eq!(taken[1], 0);
    }

    #[test]
    fn odd_lines_are_left_to_the_general_path() {
        for line in [
            &br#"{"id":{"started":{}},"id":{"started":{}}}"#[..],
            br#"{"id":{"started":{}},"noSuchField":1}"#,
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
            assert!(convert(line).is_err(), "{}", String::from_utf8_lossy(line));
        }
        // And what it takes is what the general path gives.
        for line in [
            &br#"{"id":{"started":{}},"lastMessage":true,"started":{"uuid":"u","startTimeMillis":"12"}}"#[..],
            br#"{"last_message":false,"id":{"progress":{"opaqueCount":-3}},"children":[]}"#,
            br#"{"id":{"started":{}},"started":null,"progress":{"stderr":"a\u00e9\n"}}"#,
            br#"{"id":{"started":{}},"started":{"startTime":"2024-05-01T10:00:00.123Z"}}"#,
            br#"{"id":{"testResult":{}},"testResult":{"testAttemptDuration":"1.500s"}}"#,
        ] {
            assert!(same_as_general("odd line", line), "{}", String::from_utf8_lossy(line));
        }
    }
}
