//! The plan: per message, its fields by JSON name with their type and
//! number, made once from the descriptors ([`Plan`], [`FieldPlan`], [`Ty`]),
//! and the name lookup ([`Names`]).

#[cfg(test)]
use std::collections::HashMap;

#[cfg(test)]
use prost_reflect::{Kind, MessageDescriptor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
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
pub(super) struct FieldPlan {
    pub(super) number: u32,
    pub(super) ty: Ty,
    pub(super) repeated: bool,
    pub(super) packed: bool,
    pub(super) presence: bool,
    pub(super) oneof: Option<usize>,
    pub(super) enum_default: i32,
}

/// Names to numbers (field names to field indexes, enum value names to
/// values), looked up by a scan: there are few, and most are told apart by
/// their length and first and last bytes without comparing the rest.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Names<T> {
    pub(super) entries: Vec<(u32, Box<str>, T)>,
}

impl<T: Copy> Names<T> {
    pub(super) fn push(&mut self, name: &str, value: T) {
        self.entries
            .push((name_sig(name.as_bytes()), name.into(), value));
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(_, n, _)| **n == *name)
    }

    #[inline]
    pub(super) fn get(&self, name: &[u8]) -> Option<T> {
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
pub(super) struct MsgPlan {
    /// JSON key to field index: JSON names first, then proto names, as the
    /// general path looks them up.
    pub(super) by_key: Names<usize>,
    pub(super) fields: Vec<FieldPlan>,
    pub(super) oneofs: usize,
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    pub(super) msgs: Vec<MsgPlan>,
    pub(super) enums: Vec<Names<i32>>,
}

impl Plan {
    /// The plan from prost-reflect's descriptors: what [`Plan::from_descriptor_set`] must
    /// give (tested), kept for that.
    #[cfg(test)]
    pub(super) fn build(root: &MessageDescriptor) -> Plan {
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
