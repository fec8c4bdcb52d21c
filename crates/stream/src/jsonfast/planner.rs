//! How the plan is made from the descriptor set compiled into proof-proto
//! ([`SetPlanner`], [`Plan::from_descriptor_set`]), once per process ([`plan`]).

use std::collections::HashMap;
use std::sync::OnceLock;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};

use super::plan::{FieldPlan, MsgPlan, Names, Plan, Ty};

impl Plan {
    /// The plan of message `root` from a serialized `FileDescriptorSet`, read with
    /// prost-types. A prost-reflect pool of the same files would give the same plan
    /// (tested) but costs about 2 ms of CPU to build at every start of an import,
    /// resolving every file's options against descriptor.proto; reading the set as it
    /// is takes about 60 us. Type names are the fully qualified ones compilers
    /// write (`.package.Message`); a field whose type is not found is left to the
    /// general path.
    pub(super) fn from_descriptor_set(set: &[u8], root: &str) -> Option<Plan> {
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
    pub(super) messages: &'s SetMessages<'a>,
    pub(super) enums: &'s SetEnums<'a>,
    pub(super) plan: Plan,
    pub(super) index: HashMap<&'s str, usize>,
    pub(super) enum_index: HashMap<&'s str, usize>,
    pub(super) todo: Vec<&'s str>,
}

impl<'s> SetPlanner<'s, '_> {
    /// The plan index of message `name` (a key of `messages`), queued for
    /// planning when first met.
    pub(super) fn message_index(&mut self, name: &'s str) -> usize {
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
    pub(super) fn message(&mut self, name: &'s str) -> Option<MsgPlan> {
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
    pub(super) fn field(
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
    pub(super) fn message_ty(&mut self, type_name: Option<&str>, repeated: bool) -> (Ty, bool) {
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
    pub(super) fn enum_ty(&mut self, type_name: Option<&str>) -> (Ty, i32) {
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
pub(super) fn to_json_name(name: &str) -> String {
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

pub(super) fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        Plan::from_descriptor_set(
            proof_proto::FILE_DESCRIPTOR_SET,
            "build_event_stream.BuildEvent",
        )
        .expect("build_event_stream.BuildEvent is in the descriptor set compiled into proof-proto")
    })
}
