//! Tolerant proto3-JSON → message conversion: the one place that decides
//! what happens to a JSON field whose value does not fit the schema.
//!
//! Rules:
//! - A message that converts strictly (every declared field fits, every
//!   enum name is known) is converted in one step.
//! - Otherwise it is converted field by field. A declared field whose value
//!   does not fit (an enum name the schema does not know, a string where a
//!   number goes, a malformed timestamp, an `Any` of an unknown type, ...)
//!   is left out and reported as a [`FieldWarning`] naming its path; the
//!   rest of the message is kept. Nested messages, list elements and map
//!   entries are descended into, so only the smallest part that does not
//!   fit is lost.
//! - Fields the schema does not declare are skipped without a warning: the
//!   schema is a declared subset of Bazel's (see docs/wire-facts.md), and the
//!   binary file, which keeps everything byte for byte, is the lossless input.
//!
//! The conversion never fails because of a field; only a value that is not a
//! JSON object where a message goes at the top level yields no message.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value as PValue,
};
use serde_json::Value;

/// A declared field whose JSON value did not fit the schema; the message was
/// kept without it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldWarning {
    /// Path of the field in the message, with the JSON names as written in
    /// the file, e.g. `buildMetrics.actionSummary.actionCacheStatistics.missDetails[0].reason`.
    pub field: String,
    /// Why the value did not fit.
    pub reason: String,
}

impl std::fmt::Display for FieldWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field {} does not fit the schema ({}); the event was kept without it",
            self.field, self.reason
        )
    }
}

fn strict() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(true)
}

/// Converts a JSON value to a message of type `desc`, leaving out (and
/// reporting in `warnings`) every declared field that does not fit.
/// Returns `None` only when `json` is not a JSON object.
pub fn json_to_message(
    desc: &MessageDescriptor,
    json: &Value,
    warnings: &mut Vec<FieldWarning>,
) -> Option<DynamicMessage> {
    message(desc, json, "", warnings)
}

fn warn(warnings: &mut Vec<FieldWarning>, field: &str, reason: impl ToString) {
    warnings.push(FieldWarning {
        field: if field.is_empty() {
            "(the event)".to_string()
        } else {
            field.to_string()
        },
        reason: reason.to_string(),
    });
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn message(
    desc: &MessageDescriptor,
    json: &Value,
    path: &str,
    warnings: &mut Vec<FieldWarning>,
) -> Option<DynamicMessage> {
    if let Ok(m) = DynamicMessage::deserialize_with_options(desc.clone(), json, &strict()) {
        return Some(m);
    }
    let Value::Object(map) = json else {
        warn(
            warnings,
            path,
            format!("expected a JSON object for {}", desc.full_name()),
        );
        return None;
    };
    let mut msg = DynamicMessage::new(desc.clone());
    for (key, value) in map {
        let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        else {
            continue; // not declared by our schema: skipped (see module docs)
        };
        if value.is_null() {
            continue; // proto3 JSON: null is the default value
        }
        if let Some(v) = field_value(&field, key, value, &join(path, key), warnings) {
            msg.set_field(&field, v);
        }
    }
    Some(msg)
}

/// Parses `{key: value}` strictly as a message of the field's containing
/// type and returns the field's value.
fn strict_field(field: &FieldDescriptor, key: &str, value: Value) -> Result<PValue, String> {
    let one = Value::Object([(key.to_string(), value)].into_iter().collect());
    let mut m =
        DynamicMessage::deserialize_with_options(field.parent_message().clone(), &one, &strict())
            .map_err(|e| e.to_string())?;
    Ok(m.take_field(field)
        .unwrap_or_else(|| PValue::default_value_for_field(field)))
}

/// A message type we descend into field by field (not a well-known type,
/// whose JSON form is special: a string for Timestamp, `@type` for Any).
fn descendable(kind: &Kind) -> Option<MessageDescriptor> {
    match kind {
        Kind::Message(m) if !m.full_name().starts_with("google.protobuf.") => Some(m.clone()),
        _ => None,
    }
}

fn field_value(
    field: &FieldDescriptor,
    key: &str,
    value: &Value,
    path: &str,
    warnings: &mut Vec<FieldWarning>,
) -> Option<PValue> {
    let err = match strict_field(field, key, value.clone()) {
        Ok(v) => return Some(v),
        Err(e) => e,
    };
    if field.is_map() {
        let Value::Object(entries) = value else {
            warn(warnings, path, err);
            return None;
        };
        let entry = match field.kind() {
            Kind::Message(e) => e,
            _ => unreachable!("a map field's kind is its entry message"),
        };
        let value_kind = entry.map_entry_value_field().kind();
        let mut out = std::collections::HashMap::new();
        for (k, v) in entries {
            let epath = format!("{path}[{k:?}]");
            let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
            match strict_field(field, key, one) {
                Ok(PValue::Map(m)) => out.extend(m),
                Ok(_) => {}
                Err(e) => {
                    // The key may be fine and the value a message that
                    // partly fits: parse the key alone, then the value.
                    let sub = descendable(&value_kind).filter(|_| v.is_object());
                    let key_only = Value::Object(
                        [(k.clone(), Value::Object(Default::default()))]
                            .into_iter()
                            .collect(),
                    );
                    match (sub, strict_field(field, key, key_only)) {
                        (Some(desc), Ok(PValue::Map(m))) => {
                            if let (Some(mk), Some(mv)) =
                                (m.into_keys().next(), message(&desc, v, &epath, warnings))
                            {
                                out.insert(mk, PValue::Message(mv));
                            }
                        }
                        _ => warn(warnings, &epath, e),
                    }
                }
            }
        }
        return Some(PValue::Map(out));
    }
    if field.is_list() {
        let Value::Array(items) = value else {
            warn(warnings, path, err);
            return None;
        };
        let sub = descendable(&field.kind());
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{path}[{i}]");
            if item.is_null() {
                warn(warnings, &ipath, "null is not a valid list element");
                continue;
            }
            match strict_field(field, key, Value::Array(vec![item.clone()])) {
                Ok(PValue::List(mut l)) => out.append(&mut l),
                Ok(_) => {}
                Err(e) => match &sub {
                    Some(desc) if item.is_object() => {
                        if let Some(m) = message(desc, item, &ipath, warnings) {
                            out.push(PValue::Message(m));
                        }
                    }
                    _ => warn(warnings, &ipath, e),
                },
            }
        }
        return Some(PValue::List(out));
    }
    match descendable(&field.kind()) {
        Some(desc) if value.is_object() => {
            message(&desc, value, path, warnings).map(PValue::Message)
        }
        _ => {
            warn(warnings, path, err);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    fn bep() -> MessageDescriptor {
        DescriptorPool::decode(proof_proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("build_event_stream.BuildEvent")
            .unwrap()
    }

    fn convert(json: &str) -> (proof_proto::bep::BuildEvent, Vec<FieldWarning>) {
        let mut w = Vec::new();
        let v: Value = serde_json::from_str(json).unwrap();
        let m = json_to_message(&bep(), &v, &mut w).unwrap();
        let bytes = prost::Message::encode_to_vec(&m);
        (prost::Message::decode(&bytes[..]).unwrap(), w)
    }

    fn metrics(ev: &proof_proto::bep::BuildEvent) -> &proof_proto::bep::BuildMetrics {
        match ev.payload.as_ref().unwrap() {
            proof_proto::bep::build_event::Payload::BuildMetrics(m) => m,
            p => panic!("not BuildMetrics: {p:?}"),
        }
    }

    #[test]
    fn miss_reason_names_convert_as_the_enum_they_are() {
        let (ev, w) = convert(
            r#"{"id":{"buildMetrics":{}},"buildMetrics":{"actionSummary":{"actionsExecuted":"3",
            "actionCacheStatistics":{"hits":1,"misses":2,"missDetails":[
              {"reason":"DIFFERENT_ENVIRONMENT"},{"reason":"NOT_CACHED","count":2}]}}}}"#,
        );
        assert!(w.is_empty(), "{w:?}");
        let acs = metrics(&ev)
            .action_summary
            .as_ref()
            .unwrap()
            .action_cache_statistics
            .as_ref()
            .unwrap();
        use proof_proto::blaze::action_cache_statistics::MissReason;
        let got: Vec<_> = acs
            .miss_details
            .iter()
            .map(|d| (d.reason(), d.count))
            .collect();
        assert_eq!(
            got,
            [
                (MissReason::DifferentEnvironment, 0),
                (MissReason::NotCached, 2)
            ]
        );
    }

    #[test]
    fn an_unknown_enum_name_drops_that_field_only_with_a_warning() {
        let (ev, w) = convert(
            r#"{"id":{"buildMetrics":{}},"buildMetrics":{"actionSummary":{"actionsExecuted":"3",
            "actionCacheStatistics":{"hits":1,"missDetails":[
              {"reason":"NOT_CACHED","count":4},{"reason":"NO_SUCH_REASON","count":2}]}}}}"#,
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            w[0].field,
            "buildMetrics.actionSummary.actionCacheStatistics.missDetails[1].reason"
        );
        assert!(w[0].reason.contains("NO_SUCH_REASON"), "{}", w[0].reason);
        let s = metrics(&ev).action_summary.as_ref().unwrap();
        assert_eq!(s.actions_executed, 3);
        let acs = s.action_cache_statistics.as_ref().unwrap();
        assert_eq!(acs.hits, 1);
        // The element is kept, without its reason; its count survives.
        assert_eq!(
            acs.miss_details.iter().map(|d| d.count).collect::<Vec<_>>(),
            [4, 2]
        );
    }

    #[test]
    fn a_string_where_a_number_goes_drops_that_field_only_with_a_warning() {
        let (ev, w) = convert(
            r#"{"id":{"buildFinished":{}},"lastMessage":true,"finished":{"overallSuccess":true,
              "exitCode":{"name":"SUCCESS","code":"zero"},"finishTimeMillis":"12"}}"#,
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].field, "finished.exitCode.code");
        assert!(w[0].reason.contains("invalid digit"), "{}", w[0].reason);
        assert!(ev.last_message);
        let proof_proto::bep::build_event::Payload::Finished(f) = ev.payload.unwrap() else {
            panic!()
        };
        assert_eq!(f.exit_code.unwrap().name, "SUCCESS");
        assert_eq!(f.finish_time_millis, 12);
    }

    #[test]
    fn lists_maps_and_well_known_types_lose_only_the_bad_part() {
        let (ev, w) = convert(
            r#"{"id":{"configuration":{"id":"abc"}},"configuration":{"mnemonic":"k8",
              "makeVariable":{"A":"1","B":7}},"children":[{"progress":{"opaqueCount":"x"}},
              {"progress":{"opaqueCount":2}}]}"#,
        );
        let fields: Vec<_> = w.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "configuration.makeVariable[\"B\"]",
                "children[0].progress.opaqueCount"
            ],
            "{w:?}"
        );
        assert_eq!(ev.children.len(), 2);
        let proof_proto::bep::build_event::Payload::Configuration(c) = ev.payload.unwrap() else {
            panic!()
        };
        assert_eq!(c.mnemonic, "k8");
        assert_eq!(c.make_variable.len(), 1);

        let (ev, w) = convert(
            r#"{"id":{"started":{}},"started":{"uuid":"u","startTime":"yesterday",
              "buildToolVersion":"9.0.0"}}"#,
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].field, "started.startTime");
        let proof_proto::bep::build_event::Payload::Started(s) = ev.payload.unwrap() else {
            panic!()
        };
        assert_eq!(
            (s.uuid.as_str(), s.build_tool_version.as_str()),
            ("u", "9.0.0")
        );
    }

    #[test]
    fn undeclared_fields_are_skipped_silently_and_valid_input_is_unchanged() {
        let (ev, w) =
            convert(r#"{"id":{"started":{}},"started":{"uuid":"u","notInTheSchema":{"x":1}}}"#);
        assert!(w.is_empty(), "{w:?}");
        let proof_proto::bep::build_event::Payload::Started(s) = ev.payload.unwrap() else {
            panic!()
        };
        assert_eq!(s.uuid, "u");
        let mut w = Vec::new();
        assert!(json_to_message(&bep(), &Value::from(3), &mut w).is_none());
        assert_eq!(w.len(), 1);
    }
}
