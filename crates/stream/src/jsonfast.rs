//! The fast path from one proto3-JSON BEP event to its binary form: the JSON
//! is read once by a small lexer of its own ([`Lexer`]), and each field is
//! encoded as it is read, guided by a plan made once from the descriptors.
//! No JSON tree and no dynamic message are built. (serde_json's visitor
//! machinery, used here before, took about a third more time per line.)
//!
//! It handles the ordinary shape of what Bazel writes and nothing else: at
//! anything unusual (a repeated key, two members of one oneof, an enum name
//! the schema does not know, well-known types other than Timestamp and
//! Duration, a map other than string to string, a value of the wrong
//! type, anything malformed or read differently by serde_json) it gives up
//! and the caller converts the line the general, tolerant way
//! ([`super::bepfile::json_event_to_binary_general`]), which also gives the
//! warnings and errors. Like the general path, it skips fields the schema
//! does not declare (after checking they are JSON), and reads Timestamps and
//! Durations with prost-reflect's checks and prost-types' parser, and `bytes`
//! with the base64 rules prost-reflect applies. Its plan is read from the
//! descriptor set as it is (prost-types), not from a prost-reflect pool, which
//! takes milliseconds to build at start. What it does produce is byte for
//! byte what the general conversion produces:
//! fields in field-number order, defaults of fields without presence left
//! out, packed repeated scalars (tested over every fixture line, and side by
//! side on arbitrary lines by the `bep_json_paths` fuzz target). Only the
//! order of map entries differs: the general path writes them in hash order
//! (a different order each run), this one in the order of the JSON.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

#[cfg(test)]
use prost_reflect::{Kind, MessageDescriptor};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};

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
    /// base64 in JSON, read as prost-reflect reads it.
    Bytes,
    Double,
    Float,
    /// Index into `Plan::enums`.
    Enum(usize),
    /// Index into `Plan::msgs`.
    Message(usize),
    /// `map<string, string>`.
    StringMap,
    /// google.protobuf.Timestamp or Duration (a string in JSON), read as
    /// prost-reflect reads it in the general path.
    Timestamp,
    Duration,
    /// Anything this path leaves to the general one.
    Unsupported,
}

#[derive(Debug, PartialEq)]
struct FieldPlan {
    number: u32,
    ty: Ty,
    repeated: bool,
    packed: bool,
    presence: bool,
    oneof: Option<usize>,
    enum_default: i32,
}

/// Names to numbers (field names to field indexes, enum value names to
/// values), looked up by a scan: there are few, and most are told apart by
/// their length and first and last bytes without comparing the rest.
#[derive(Debug, Default, PartialEq)]
struct Names<T> {
    entries: Vec<(u32, Box<str>, T)>,
}

impl<T: Copy> Names<T> {
    fn push(&mut self, name: &str, value: T) {
        self.entries
            .push((name_sig(name.as_bytes()), name.into(), value));
    }

    fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(_, n, _)| **n == *name)
    }

    #[inline]
    fn get(&self, name: &[u8]) -> Option<T> {
        let sig = name_sig(name);
        self.entries
            .iter()
            .find(|(s, n, _)| *s == sig && same_bytes(n.as_bytes(), name))
            .map(|&(_, _, v)| v)
    }
}

/// Whether two short byte strings are equal, eight bytes at a time (a call
/// to memcmp costs more than the comparison for names this short).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word(s: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"))
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    // Whole words, then the last eight bytes (overlapping the previous word).
    (0..n / 8).all(|i| word(a, i * 8) == word(b, i * 8)) && word(a, n - 8) == word(b, n - 8)
}

/// A name's length and its first and last bytes.
#[inline]
fn name_sig(name: &[u8]) -> u32 {
    match name {
        [] => 0,
        [first, .., last] => (name.len() as u32) << 16 | u32::from(*first) << 8 | u32::from(*last),
        [only] => 1 << 16 | u32::from(*only) << 8 | u32::from(*only),
    }
}

#[derive(Debug, Default, PartialEq)]
struct MsgPlan {
    /// JSON key to field index: JSON names first, then proto names, as the
    /// general path looks them up.
    by_key: Names<usize>,
    fields: Vec<FieldPlan>,
    oneofs: usize,
}

#[derive(Debug, Default, PartialEq)]
struct Plan {
    msgs: Vec<MsgPlan>,
    enums: Vec<Names<i32>>,
}

impl Plan {
    /// The plan from prost-reflect's descriptors: what [`Plan::from_descriptor_set`] must
    /// give (tested), kept for that.
    #[cfg(test)]
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
                    Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
                        Ty::Timestamp
                    }
                    Kind::Message(m) if m.full_name() == "google.protobuf.Duration" => Ty::Duration,
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
                            let mut names = Names::default();
                            for v in e.values() {
                                names.push(v.name(), v.number());
                            }
                            plan.enums.push(names);
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
                    Kind::Bytes => Ty::Bytes,
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
                mp.by_key.push(f.json_name(), i);
            }
            for (i, f) in desc.fields().enumerate() {
                if !mp.by_key.contains(f.name()) {
                    mp.by_key.push(f.name(), i);
                }
            }
            plan.msgs[me] = mp;
        }
        plan
    }
}

impl Plan {
    /// The plan of message `root` from a serialized `FileDescriptorSet`, read with
    /// prost-types. A prost-reflect pool of the same files would give the same plan
    /// (tested) but costs about 2 ms of CPU to build at every start of an import,
    /// resolving every file's options against descriptor.proto; reading the set as it
    /// is takes about 60 us. Type names are the fully qualified ones compilers
    /// write (`.package.Message`); a field whose type is not found is left to the
    /// general path.
    fn from_descriptor_set(set: &[u8], root: &str) -> Option<Plan> {
        let set = <FileDescriptorSet as prost::Message>::decode(set).ok()?;
        let (mut messages, mut enums) = (HashMap::new(), HashMap::new());
        for f in &set.file {
            let scope = match f.package() {
                "" => String::new(),
                p => format!("{p}."),
            };
            let proto3 = f.syntax() == "proto3";
            collect_types(
                &scope,
                proto3,
                &f.message_type,
                &f.enum_type,
                &mut messages,
                &mut enums,
            );
        }
        let (root_name, _) = messages.get_key_value(root)?;
        let mut planner = SetPlanner {
            messages: &messages,
            enums: &enums,
            plan: Plan::default(),
            index: HashMap::new(),
            enum_index: HashMap::new(),
            todo: Vec::new(),
        };
        planner.message_index(root_name);
        while let Some(name) = planner.todo.pop() {
            let me = planner.index[name];
            let mp = planner.message(name)?;
            planner.plan.msgs[me] = mp;
        }
        Some(planner.plan)
    }
}

/// Messages of a descriptor set by full name, with whether their file is proto3.
type SetMessages<'a> = HashMap<String, (&'a DescriptorProto, bool)>;
/// Enums of a descriptor set by full name.
type SetEnums<'a> = HashMap<String, &'a EnumDescriptorProto>;

/// Every message and enum of `messages` and `enums` under `scope`, by full name.
fn collect_types<'a>(
    scope: &str,
    proto3: bool,
    messages: &'a [DescriptorProto],
    enums: &'a [EnumDescriptorProto],
    msgs_out: &mut SetMessages<'a>,
    enums_out: &mut SetEnums<'a>,
) {
    for e in enums {
        enums_out.insert(format!("{scope}{}", e.name()), e);
    }
    for m in messages {
        let name = format!("{scope}{}", m.name());
        collect_types(
            &format!("{name}."),
            proto3,
            &m.nested_type,
            &m.enum_type,
            msgs_out,
            enums_out,
        );
        msgs_out.insert(name, (m, proto3));
    }
}

/// Builds a [`Plan`] from a descriptor set's types, message by message from
/// the root, numbering messages and enums in the order they are first met.
struct SetPlanner<'s, 'a> {
    messages: &'s SetMessages<'a>,
    enums: &'s SetEnums<'a>,
    plan: Plan,
    index: HashMap<&'s str, usize>,
    enum_index: HashMap<&'s str, usize>,
    todo: Vec<&'s str>,
}

impl<'s> SetPlanner<'s, '_> {
    /// The plan index of message `name` (a key of `messages`), queued for
    /// planning when first met.
    fn message_index(&mut self, name: &'s str) -> usize {
        let next = self.plan.msgs.len();
        let i = *self.index.entry(name).or_insert(next);
        if i == next {
            self.todo.push(name);
            self.plan.msgs.push(MsgPlan::default());
        }
        i
    }

    /// The plan of one message: its fields in number order, as prost-reflect
    /// lists them, and its keys.
    fn message(&mut self, name: &'s str) -> Option<MsgPlan> {
        let (desc, proto3) = self.messages[name];
        let mut mp = MsgPlan {
            oneofs: desc.oneof_decl.len(),
            ..MsgPlan::default()
        };
        let mut fields: Vec<_> = desc.field.iter().collect();
        fields.sort_by_key(|f| f.number());
        for f in &fields {
            mp.fields
                .push(self.field(f, proto3, desc.oneof_decl.len())?);
        }
        let json_name = |f: &FieldDescriptorProto| match &f.json_name {
            Some(n) => n.clone(),
            None => to_json_name(f.name()),
        };
        // Like the general path: the JSON name first, then the proto name.
        for (i, f) in fields.iter().enumerate() {
            mp.by_key.push(&json_name(f), i);
        }
        for (i, f) in fields.iter().enumerate() {
            if !mp.by_key.contains(f.name()) {
                mp.by_key.push(f.name(), i);
            }
        }
        Some(mp)
    }

    /// One field's plan; packing and presence as prost-reflect decides them.
    fn field(
        &mut self,
        f: &FieldDescriptorProto,
        proto3: bool,
        oneofs: usize,
    ) -> Option<FieldPlan> {
        let repeated = f.label() == Label::Repeated;
        let type_name = f.type_name.as_deref().and_then(|t| t.strip_prefix('.'));
        let (ty, enum_default, map) = match f.r#type() {
            Type::Message => {
                let (ty, map) = self.message_ty(type_name, repeated);
                (ty, 0, map)
            }
            Type::Enum => {
                let (ty, enum_default) = self.enum_ty(type_name);
                (ty, enum_default, false)
            }
            other => (scalar_ty(other), 0, false),
        };
        let packable = !matches!(
            f.r#type(),
            Type::String | Type::Bytes | Type::Message | Type::Group
        );
        let is_message = matches!(f.r#type(), Type::Message | Type::Group);
        Some(FieldPlan {
            number: u32::try_from(f.number()).ok()?,
            ty,
            repeated: repeated && !map,
            packed: repeated
                && packable
                && f.options.as_ref().and_then(|o| o.packed).unwrap_or(proto3),
            presence: f.proto3_optional()
                || f.oneof_index.is_some()
                || (!repeated && (is_message || !proto3)),
            oneof: f
                .oneof_index
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < oneofs),
            enum_default,
        })
    }

    /// A message-typed field: a string map, a well-known time type, another
    /// planned message, or unsupported. The flag says it is a map.
    fn message_ty(&mut self, type_name: Option<&str>, repeated: bool) -> (Ty, bool) {
        let messages = self.messages;
        match type_name.and_then(|t| messages.get_key_value(t)) {
            None => (Ty::Unsupported, false),
            Some((_, (m, _))) if repeated && m.options.as_ref().is_some_and(|o| o.map_entry()) => {
                let kind = |n: i32| m.field.iter().find(|x| x.number() == n).map(|x| x.r#type());
                if kind(1) == Some(Type::String) && kind(2) == Some(Type::String) {
                    (Ty::StringMap, true)
                } else {
                    (Ty::Unsupported, true)
                }
            }
            Some((t, _)) if t == "google.protobuf.Timestamp" => (Ty::Timestamp, false),
            Some((t, _)) if t == "google.protobuf.Duration" => (Ty::Duration, false),
            Some((t, _)) if t.starts_with("google.protobuf.") => (Ty::Unsupported, false),
            Some((t, _)) => (Ty::Message(self.message_index(t)), false),
        }
    }

    /// An enum-typed field and its default (the first value).
    fn enum_ty(&mut self, type_name: Option<&str>) -> (Ty, i32) {
        let enums = self.enums;
        match type_name.and_then(|t| enums.get_key_value(t)) {
            None => (Ty::Unsupported, 0),
            Some((t, _)) if t.starts_with("google.protobuf.") => (Ty::Unsupported, 0),
            Some((t, e)) => {
                let default = e.value.first().map_or(0, |v| v.number());
                let next = self.plan.enums.len();
                let i = *self.enum_index.entry(t.as_str()).or_insert(next);
                if i == next {
                    let mut names = Names::default();
                    for v in &e.value {
                        names.push(v.name(), v.number());
                    }
                    self.plan.enums.push(names);
                }
                (Ty::Enum(i), default)
            }
        }
    }
}

/// The plan type of a scalar field (groups are unsupported).
fn scalar_ty(t: Type) -> Ty {
    match t {
        Type::Double => Ty::Double,
        Type::Float => Ty::Float,
        Type::Int32 => Ty::Int32,
        Type::Int64 => Ty::Int64,
        Type::Uint32 => Ty::Uint32,
        Type::Uint64 => Ty::Uint64,
        Type::Sint32 => Ty::Sint32,
        Type::Sint64 => Ty::Sint64,
        Type::Fixed32 => Ty::Fixed32,
        Type::Fixed64 => Ty::Fixed64,
        Type::Sfixed32 => Ty::Sfixed32,
        Type::Sfixed64 => Ty::Sfixed64,
        Type::Bool => Ty::Bool,
        Type::String => Ty::String,
        Type::Bytes => Ty::Bytes,
        Type::Group | Type::Message | Type::Enum => Ty::Unsupported,
    }
}

/// A field's JSON name when the descriptor has none, as prost-reflect makes it.
fn to_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        Plan::from_descriptor_set(
            proof_proto::FILE_DESCRIPTOR_SET,
            "build_event_stream.BuildEvent",
        )
        .expect("build_event_stream.BuildEvent is in the descriptor set compiled into proof-proto")
    })
}

/// The most fields and oneofs a message may have on this path (seen-bits
/// kept on the stack; BEP's largest message has 40-odd fields).
const MAX_FIELDS: usize = 256;
const MAX_ONEOFS: usize = 64;

#[derive(Default)]
struct Ctx {
    /// (field number, start, end) of each field written to the destination,
    /// for every message being written, innermost last (a stack).
    chunks: Vec<(u32, usize, usize)>,
    /// A message's fields put back in number order.
    sorted: Vec<u8>,
    packed: Vec<u8>,
    /// The event being written (copied out at its exact size).
    out: Vec<u8>,
    /// The lexer's buffer for strings with escapes or non-ASCII text.
    scratch: Vec<u8>,
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

/// How deep objects and arrays may nest on this path (Bazel's nest a few
/// levels; serde_json, in the general path, refuses more than 127).
const MAX_NESTING: usize = 100;

/// The longest number an undeclared field may hold on this path (serde_json
/// reads longer ones as floats, and may find them out of range).
const MAX_SKIPPED_NUMBER: usize = 64;

/// Reads JSON tokens off one line. It knows the JSON grammar (RFC 8259) and
/// gives up, rather than guessing, wherever serde_json (which the general path
/// uses) would read a value differently or refuse the text: numbers with a
/// fraction or an exponent, integers beyond 64 bits, `-0`, lone surrogates,
/// raw control characters in strings, text that is not UTF-8.
///
/// UTF-8 is checked only where a string has a byte above ASCII: anywhere
/// else such a byte is not JSON, and the lexer gives up there anyway.
struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Objects and arrays open.
    nesting: usize,
    /// A string with escapes or non-ASCII bytes, decoded and checked.
    scratch: Vec<u8>,
}

impl<'a> Lexer<'a> {
    /// The next byte after whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.src.get(self.pos) {
            match b {
                b' ' | b'\n' | b'\r' | b'\t' => self.pos += 1,
                _ => return Some(b),
            }
        }
        None
    }

    #[inline(always)]
    fn eat(&mut self, want: u8) -> Result<(), GiveUp> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// Opens an object or an array (`open` is next).
    #[inline]
    fn open(&mut self, open: u8) -> Result<(), GiveUp> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(GiveUp);
        }
        self.eat(open)
    }

    /// After a member or an element: `true` at the closing `close` (which
    /// closes the object or array), `false` after a comma.
    #[inline(always)]
    fn next_or_close(&mut self, close: u8) -> Result<bool, GiveUp> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b) if b == close => {
                self.pos += 1;
                self.nesting -= 1;
                Ok(true)
            }
            _ => Err(GiveUp),
        }
    }

    /// Whether the object or array just opened is empty (and then closes it).
    #[inline(always)]
    fn empty(&mut self, close: u8) -> bool {
        if self.peek() == Some(close) {
            self.pos += 1;
            self.nesting -= 1;
            true
        } else {
            false
        }
    }

    /// Reads past one JSON value (next), checking it as serde_json would
    /// read it: the value of a field our schema does not declare, which the
    /// general path skips too. Numbers with an exponent, and long ones, are
    /// left to the general path.
    fn skip(&mut self) -> Result<(), GiveUp> {
        match self.peek().ok_or(GiveUp)? {
            b'"' => {
                self.string()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.skip_number()?,
            b'[' => {
                self.open(b'[')?;
                if !self.empty(b']') {
                    loop {
                        self.skip()?;
                        if self.next_or_close(b']')? {
                            break;
                        }
                    }
                }
            }
            b'{' => {
                self.open(b'{')?;
                if !self.empty(b'}') {
                    loop {
                        if self.peek() != Some(b'"') {
                            return Err(GiveUp);
                        }
                        self.string()?;
                        self.eat(b':')?;
                        self.skip()?;
                        if self.next_or_close(b'}')? {
                            break;
                        }
                    }
                }
            }
            _ => return Err(GiveUp),
        }
        Ok(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, not too long.
    fn skip_number(&mut self) -> Result<(), GiveUp> {
        let s = self.src;
        let start = self.pos;
        let digits = |i: usize| {
            s[i.min(s.len())..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let mut i = start + usize::from(s[start] == b'-');
        let int = digits(i);
        if int == 0 || (s[i] == b'0' && int > 1) {
            return Err(GiveUp);
        }
        i += int;
        if s.get(i) == Some(&b'.') {
            let frac = digits(i + 1);
            if frac == 0 {
                return Err(GiveUp);
            }
            i += 1 + frac;
        }
        if matches!(s.get(i), Some(b'e' | b'E')) || i - start > MAX_SKIPPED_NUMBER {
            return Err(GiveUp);
        }
        self.pos = i;
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), GiveUp> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// A string's UTF-8 bytes; its opening quote is the next byte. Borrowed
    /// from the line when it is plain ASCII.
    #[inline(always)]
    fn string(&mut self) -> Result<&[u8], GiveUp> {
        let s = self.src;
        let start = self.pos + 1;
        let end = start + special(&s[start..]).ok_or(GiveUp)?;
        if s[end] == b'"' {
            self.pos = end + 1;
            return Ok(&s[start..end]);
        }
        self.slow_string(start, end)
    }

    /// The rest of a string from its first backslash, control character or
    /// non-ASCII byte at `at`.
    #[inline(never)]
    fn slow_string(&mut self, start: usize, mut at: usize) -> Result<&[u8], GiveUp> {
        let s = self.src;
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let mut from = start;
        loop {
            out.extend_from_slice(&s[from..at]);
            match s[at] {
                b'"' => {
                    self.pos = at + 1;
                    // Escapes decode to whole characters, so the string is
                    // UTF-8 exactly when its raw runs are.
                    std::str::from_utf8(&out).map_err(|_| GiveUp)?;
                    self.scratch = out;
                    return Ok(&self.scratch);
                }
                b'\\' => {}
                0x80.. => {
                    // Non-ASCII bytes: copied as they are, checked at the end.
                    let run = s[at..].iter().take_while(|&&b| b >= 0x80).count();
                    out.extend_from_slice(&s[at..at + run]);
                    from = at + run;
                    at = from + special(s.get(from..).ok_or(GiveUp)?).ok_or(GiveUp)?;
                    continue;
                }
                // A raw control character.
                _ => return Err(GiveUp),
            }
            let esc = *s.get(at + 1).ok_or(GiveUp)?;
            at += 2;
            let mut utf8 = [0u8; 4];
            let c = match esc {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = hex4(s, at)?;
                    at += 4;
                    let c = match hi {
                        0xd800..=0xdbff => {
                            if s.get(at..at + 2) != Some(b"\\u") {
                                return Err(GiveUp);
                            }
                            let lo = hex4(s, at + 2)?;
                            if !(0xdc00..=0xdfff).contains(&lo) {
                                return Err(GiveUp);
                            }
                            at += 6;
                            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                        }
                        0xdc00..=0xdfff => return Err(GiveUp),
                        c => c,
                    };
                    char::from_u32(c).ok_or(GiveUp)?
                }
                _ => return Err(GiveUp),
            };
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            from = at;
            at = from + special(s.get(from..).ok_or(GiveUp)?).ok_or(GiveUp)?;
        }
    }

    /// An integer; its first byte (`-` or a digit) is next.
    #[inline(always)]
    fn integer(&mut self) -> Result<Scalar<'static>, GiveUp> {
        let s = self.src;
        let neg = s[self.pos] == b'-';
        let mut i = self.pos + usize::from(neg);
        let first = i;
        let mut v: u64 = 0;
        while let Some(&b) = s.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .ok_or(GiveUp)?;
            i += 1;
        }
        // No digits, a leading zero, a fraction or an exponent.
        if i == first
            || (s[first] == b'0' && i - first > 1)
            || matches!(s.get(i), Some(b'.' | b'e' | b'E'))
        {
            return Err(GiveUp);
        }
        self.pos = i;
        if !neg {
            return Ok(Scalar::U64(v));
        }
        // serde_json reads `-0` as a float.
        match i64::try_from(v) {
            Ok(v) if v != 0 => Ok(Scalar::I64(-v)),
            _ => Err(GiveUp),
        }
    }

    /// A string, a number or a boolean.
    #[inline(always)]
    fn scalar(&mut self) -> Result<Scalar<'_>, GiveUp> {
        match self.peek().ok_or(GiveUp)? {
            b'"' => self.string().map(Scalar::Str),
            b't' => self.literal(b"true").map(|()| Scalar::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Scalar::Bool(false)),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => Err(GiveUp),
        }
    }
}

/// Where the first byte that ends a string's plain ASCII run is: a quote, a
/// backslash, a control character or a byte above ASCII (eight bytes at a
/// time, as serde_json scans).
#[inline(always)]
fn special(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (quote, backslash),
        // below 0x20 or above 0x7f; borrows only flag bytes above a true one.
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | v.wrapping_sub(ONES * 0x20) & !v
            | v)
            & HIGH;
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
        .map(|i| at + i)
}

fn hex4(s: &[u8], at: usize) -> Result<u32, GiveUp> {
    let h = s.get(at..at + 4).ok_or(GiveUp)?;
    h.iter().try_fold(0u32, |v, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(GiveUp),
        };
        Ok(v << 4 | u32::from(d))
    })
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
        let mut out = std::mem::take(&mut ctx.out);
        out.clear();
        // (A line given up on may have left some behind.)
        ctx.chunks.clear();
        let mut conv = Conv {
            lx: Lexer {
                src: json,
                pos: 0,
                nesting: 0,
                scratch: std::mem::take(&mut ctx.scratch),
            },
            ctx: &mut ctx,
        };
        if conv.lx.peek() != Some(b'{') {
            return Err(GiveUp);
        }
        let id_set = conv.message(0, &mut out, None, true)?;
        // Nothing but whitespace after the event.
        if conv.lx.peek().is_some() {
            return Err(GiveUp);
        }
        let scratch = std::mem::take(&mut conv.lx.scratch);
        ctx.scratch = scratch;
        let bin = out.clone();
        ctx.out = out;
        // The general path insists on an "id" object.
        if !id_set {
            return Err(GiveUp);
        }
        Ok(bin)
    })
}

/// One line being converted.
struct Conv<'a, 'c> {
    lx: Lexer<'a>,
    ctx: &'c mut Ctx,
}

impl Conv<'_, '_> {
    /// One message, a JSON object (next), written to `dst` after `tag` and
    /// its length when it is a field of another message. At the top level
    /// (`need_id`), yields whether field 1 ("id") was set.
    fn message(
        &mut self,
        msg: usize,
        dst: &mut Vec<u8>,
        tag: Option<u32>,
        need_id: bool,
    ) -> Result<bool, GiveUp> {
        self.lx.open(b'{')?;
        let plan = plan();
        let mp = &plan.msgs[msg];
        if mp.fields.len() > MAX_FIELDS || mp.oneofs > MAX_ONEOFS {
            return Err(GiveUp);
        }
        let mut seen = [0u64; MAX_FIELDS / 64];
        let mut oneofs = [0u64; MAX_ONEOFS / 64];
        let chunks_from = self.ctx.chunks.len();
        let mut in_order = true;
        let mut last = 0;
        // The message is written where it goes: its tag, one byte for its length (widened
        // afterwards if the body needs more), its body.
        let len_at = tag.map(|tag| {
            key(tag, WIRE_LEN, dst);
            dst.push(0);
            dst.len() - 1
        });
        let body_start = dst.len();
        let mut id_set = false;
        if !self.lx.empty(b'}') {
            loop {
                if self.lx.peek() != Some(b'"') {
                    return Err(GiveUp);
                }
                let name = self.lx.string()?;
                let Some(i) = mp.by_key.get(name) else {
                    // A field our schema does not declare: skipped, as the
                    // general path skips it.
                    self.lx.eat(b':')?;
                    self.lx.skip()?;
                    if self.lx.next_or_close(b'}')? {
                        break;
                    }
                    continue;
                };
                self.lx.eat(b':')?;
                if test_bit(&seen, i) {
                    return Err(GiveUp);
                }
                set_bit(&mut seen, i);
                let f = &mp.fields[i];
                let start = dst.len();
                let set = self.field(f, dst)?;
                if set {
                    if let Some(o) = f.oneof {
                        if test_bit(&oneofs, o) {
                            return Err(GiveUp);
                        }
                        set_bit(&mut oneofs, o);
                    }
                    if need_id && f.number == 1 {
                        id_set = true;
                    }
                }
                let end = dst.len();
                if end > start {
                    in_order &= f.number > last;
                    last = f.number;
                    self.ctx.chunks.push((f.number, start, end));
                }
                if self.lx.next_or_close(b'}')? {
                    break;
                }
            }
        }
        // Fields in number order, as protobuf encoders write them.
        if !in_order {
            let chunks = &mut self.ctx.chunks[chunks_from..];
            chunks.sort_by_key(|c| c.0);
            let sorted = &mut self.ctx.sorted;
            sorted.clear();
            for &(_, s, e) in &*chunks {
                sorted.extend_from_slice(&dst[s..e]);
            }
            dst.truncate(body_start);
            dst.extend_from_slice(sorted);
        }
        self.ctx.chunks.truncate(chunks_from);
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
        Ok(id_set)
    }

    /// The value of one field (next), encoded into `dst`; yields whether it
    /// is set (false for `null`).
    fn field(&mut self, f: &FieldPlan, dst: &mut Vec<u8>) -> Result<bool, GiveUp> {
        match self.lx.peek().ok_or(GiveUp)? {
            b'n' => {
                self.lx.literal(b"null")?;
                match f.ty {
                    Ty::Unsupported => Err(GiveUp),
                    _ => Ok(false),
                }
            }
            b'[' => self.list(f, dst).map(|()| true),
            b'{' => match f.ty {
                Ty::Message(m) if !f.repeated => {
                    self.message(m, dst, Some(f.number), false)?;
                    Ok(true)
                }
                Ty::StringMap => self.string_map(f, dst).map(|()| true),
                _ => Err(GiveUp),
            },
            _ => {
                let s = self.lx.scalar()?;
                scalar(f, s, dst).map(|()| true)
            }
        }
    }

    /// A repeated field's JSON array (next).
    fn list(&mut self, f: &FieldPlan, dst: &mut Vec<u8>) -> Result<(), GiveUp> {
        if !f.repeated
            || matches!(
                f.ty,
                Ty::Unsupported | Ty::StringMap | Ty::Timestamp | Ty::Duration
            )
        {
            return Err(GiveUp);
        }
        self.lx.open(b'[')?;
        if self.lx.empty(b']') {
            return Ok(());
        }
        if f.packed {
            let mut packed = std::mem::take(&mut self.ctx.packed);
            packed.clear();
            loop {
                let (n, _) = number(f.ty, &self.lx.scalar()?).ok_or(GiveUp)?;
                put_num(&n, &mut packed);
                if self.lx.next_or_close(b']')? {
                    break;
                }
            }
            key(f.number, WIRE_LEN, dst);
            encode_varint(packed.len() as u64, dst);
            dst.extend_from_slice(&packed);
            self.ctx.packed = packed;
            return Ok(());
        }
        loop {
            match f.ty {
                Ty::Message(m) => {
                    if self.lx.peek() != Some(b'{') {
                        return Err(GiveUp);
                    }
                    self.message(m, dst, Some(f.number), false)?;
                }
                Ty::String => {
                    if self.lx.peek() != Some(b'"') {
                        return Err(GiveUp);
                    }
                    let v = self.lx.string()?;
                    put_len(f.number, v, dst);
                }
                Ty::Bytes => {
                    if self.lx.peek() != Some(b'"') {
                        return Err(GiveUp);
                    }
                    let v = base64(self.lx.string()?)?;
                    put_len(f.number, &v, dst);
                }
                ty => {
                    let (n, _) = number(ty, &self.lx.scalar()?).ok_or(GiveUp)?;
                    key(f.number, wire(&n), dst);
                    put_num(&n, dst);
                }
            }
            if self.lx.next_or_close(b']')? {
                return Ok(());
            }
        }
    }

    /// A `map<string, string>` field's JSON object (next).
    fn string_map(&mut self, f: &FieldPlan, dst: &mut Vec<u8>) -> Result<(), GiveUp> {
        self.lx.open(b'{')?;
        if self.lx.empty(b'}') {
            return Ok(());
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        loop {
            if self.lx.peek() != Some(b'"') {
                return Err(GiveUp);
            }
            let k = self.lx.string()?.to_owned();
            // A repeated key: the general path keeps the last one.
            if keys.contains(&k) {
                return Err(GiveUp);
            }
            self.lx.eat(b':')?;
            if self.lx.peek() != Some(b'"') {
                return Err(GiveUp);
            }
            let v = self.lx.string()?;
            let len = |s: &[u8]| {
                if s.is_empty() {
                    0
                } else {
                    1 + prost::encoding::encoded_len_varint(s.len() as u64) + s.len()
                }
            };
            key(f.number, WIRE_LEN, dst);
            encode_varint((len(&k) + len(v)) as u64, dst);
            for (n, s) in [(1, &k[..]), (2, v)] {
                if !s.is_empty() {
                    put_len(n, s, dst);
                }
            }
            keys.push(k);
            if self.lx.next_or_close(b'}')? {
                return Ok(());
            }
        }
    }
}

/// A message's length and body.
fn put_message(m: &impl prost::Message, dst: &mut Vec<u8>) {
    encode_varint(m.encoded_len() as u64, dst);
    m.encode(dst).expect("a Vec grows");
}

/// The range prost-reflect accepts for a google.protobuf.Timestamp
/// (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z) and a Duration.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;
const MAX_DURATION_NANOS: u32 = 999_999_999;

/// A JSON google.protobuf.Timestamp as prost-reflect reads it: a strict
/// RFC 3339 string, parsed by prost-types, in range.
fn timestamp(v: &str) -> Option<prost_types::Timestamp> {
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
fn duration(v: &str) -> Option<prost_types::Duration> {
    let d: prost_types::Duration = v.parse().ok()?;
    (d.seconds.unsigned_abs() <= MAX_DURATION_SECONDS
        && d.nanos.unsigned_abs() <= MAX_DURATION_NANOS)
        .then_some(d)
}

/// A length-delimited field.
fn put_len(number: u32, bytes: &[u8], dst: &mut Vec<u8>) {
    key(number, WIRE_LEN, dst);
    encode_varint(bytes.len() as u64, dst);
    dst.extend_from_slice(bytes);
}

/// A singular scalar field's value.
fn scalar(f: &FieldPlan, s: Scalar, dst: &mut Vec<u8>) -> Result<(), GiveUp> {
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
enum Scalar<'a> {
    Bool(bool),
    U64(u64),
    I64(i64),
    /// UTF-8, checked.
    Str(&'a [u8]),
}

/// A scalar value, encoded as the field's type wants it.
enum Num {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
}

/// Converts `s` as the general path's visitors do; `None`: a value it
/// refuses (or one this path leaves to it). The flag says the value is the
/// type's default.
fn number(ty: Ty, s: &Scalar) -> Option<(Num, bool)> {
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
fn integer(ty: Ty, s: &Scalar) -> Option<(Num, bool)> {
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
fn base64(s: &[u8]) -> Result<Vec<u8>, GiveUp> {
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

#[cfg(test)]
mod tests {
    use super::*;
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
            format!(
                r#"{{"id":{{"progress":{{"opaqueCount":1}}}},"progress":{{"stdout":{stdout}}}}}"#
            )
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
            let mut line =
                br#"{"id":{"progress":{"opaqueCount":1}},"progress":{"stdout":"#.to_vec();
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
}
