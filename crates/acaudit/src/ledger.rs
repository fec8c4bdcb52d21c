//! The executed actions of an `executor.bin` and the ActionResults the
//! executor returned for them (`rbe_proof.ledger` records: a header, then
//! the raw ListOperations pages). An action counts as executed exactly as
//! the evidence counts it (`proof_evidence::attestation`): done, an
//! `ExecuteResponse` with an OK status and an ActionResult of exit code 0,
//! not served from the cache.

use std::collections::{BTreeMap, BTreeSet};

use proof_proto::ledger::{ledger_record, LedgerRecord};
use proof_proto::longrunning::operation;
use proof_proto::reapi::{ActionResult, ExecuteOperationMetadata, ExecuteResponse};
use proof_stream::delimited::DelimitedReader;
use prost::Message;

use crate::AuditError;

/// Largest ledger record read (the evidence derivation's own limit).
pub const MAX_LEDGER_RECORD: usize = 256 * 1024 * 1024;

/// One action the executor executed for the invocation, under one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct AttestedEntry {
    pub instance_name: String,
    /// `HASH/SIZE`.
    pub action_digest: String,
    /// The operation name (the first one, if the action ran several times).
    pub operation: String,
    /// The ActionResults the executor returned for it (one per distinct
    /// result; an action run twice with different results has two).
    pub results: Vec<ActionResult>,
}

/// What an `executor.bin` attests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttestedLedger {
    /// The endpoint the signer asked.
    pub executor: String,
    pub invocation_id: String,
    /// Executed actions, sorted by (instance, digest).
    pub entries: Vec<AttestedEntry>,
    /// Every worker any operation of the ledger names (executed, cached or
    /// failed).
    pub workers: BTreeSet<String>,
}

/// Reads the ledger `bytes`. Fails on framing or a record that is not a
/// LedgerRecord, as the evidence derivation does; non-OK pages are skipped.
pub fn read_ledger(bytes: &[u8]) -> Result<AttestedLedger, AuditError> {
    let mut out = AttestedLedger::default();
    let mut header = false;
    let mut by_key: BTreeMap<(String, String), AttestedEntry> = BTreeMap::new();
    for (index, rec) in DelimitedReader::with_limit(bytes, MAX_LEDGER_RECORD).enumerate() {
        let rec = rec.map_err(|e| AuditError::Framing(e.to_string()))?;
        let bad = |what: String| AuditError::BadLedger {
            index: index as u64,
            what,
        };
        let rec = LedgerRecord::decode(rec.as_slice())
            .map_err(|e| bad(format!("not a LedgerRecord: {e}")))?;
        use ledger_record::Record as R;
        match rec.record {
            Some(R::Header(h)) if !header => {
                header = true;
                out.executor = h.executor;
                out.invocation_id = h.invocation_id;
            }
            Some(R::Header(_)) => return Err(bad("a second header".into())),
            _ if !header => return Err(bad("the first record must be the header".into())),
            Some(R::Page(p)) if p.status_code == 0 => {
                for op in p.response.iter().flat_map(|r| &r.operations) {
                    let resp = match &op.result {
                        Some(operation::Result::Response(a))
                            if a.type_url.ends_with("ExecuteResponse") =>
                        {
                            ExecuteResponse::decode(a.value.as_slice()).ok()
                        }
                        _ => None,
                    };
                    let Some(resp) = resp else { continue };
                    let Some(result) = resp.result.as_ref() else {
                        continue;
                    };
                    if let Some(w) = result
                        .execution_metadata
                        .as_ref()
                        .map(|m| m.worker.clone())
                        .filter(|w| !w.is_empty())
                    {
                        out.workers.insert(w);
                    }
                    let status_ok = resp.status.as_ref().is_none_or(|s| s.code == 0);
                    if !op.done || !status_ok || resp.cached_result || result.exit_code != 0 {
                        continue;
                    }
                    let Some(meta) = op
                        .metadata
                        .as_ref()
                        .filter(|a| a.type_url.ends_with("ExecuteOperationMetadata"))
                        .and_then(|a| ExecuteOperationMetadata::decode(a.value.as_slice()).ok())
                    else {
                        continue;
                    };
                    let Some(d) = meta.action_digest.filter(|d| !d.hash.is_empty()) else {
                        continue;
                    };
                    let digest = format!("{}/{}", d.hash, d.size_bytes);
                    let prefix = format!("{}/", p.instance_name);
                    let e = by_key
                        .entry((p.instance_name.clone(), digest.clone()))
                        .or_insert_with(|| AttestedEntry {
                            instance_name: p.instance_name.clone(),
                            action_digest: digest,
                            operation: op.name.strip_prefix(&prefix).unwrap_or(&op.name).into(),
                            results: Vec::new(),
                        });
                    if !e.results.contains(result) {
                        e.results.push(result.clone());
                    }
                }
            }
            Some(_) => {}
            None => return Err(bad("an empty record".into())),
        }
    }
    if !header {
        return Err(AuditError::BadLedger {
            index: 0,
            what: "the file has no header record".into(),
        });
    }
    out.entries = by_key.into_values().collect();
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proof_proto::ledger::{Header, OperationsPage};
    use proof_proto::longrunning::{ListOperationsResponse, Operation};
    use proof_proto::reapi::{Digest, ExecutedActionMetadata, OutputFile};

    pub fn result(worker: &str, path: &str, hash: &str) -> ActionResult {
        ActionResult {
            output_files: vec![OutputFile {
                path: path.into(),
                digest: Some(Digest {
                    hash: hash.into(),
                    size_bytes: 6,
                }),
                ..Default::default()
            }],
            exit_code: 0,
            execution_metadata: Some(ExecutedActionMetadata {
                worker: worker.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn op(name: &str, action: &str, r: ActionResult, cached: bool) -> Operation {
        Operation {
            name: name.into(),
            metadata: Some(prost_types_any(
                "build.bazel.remote.execution.v2.ExecuteOperationMetadata",
                ExecuteOperationMetadata {
                    stage: 4,
                    action_digest: Some(Digest {
                        hash: action.into(),
                        size_bytes: 140,
                    }),
                    ..Default::default()
                }
                .encode_to_vec(),
            )),
            done: true,
            result: Some(operation::Result::Response(prost_types_any(
                "build.bazel.remote.execution.v2.ExecuteResponse",
                ExecuteResponse {
                    result: Some(r),
                    cached_result: cached,
                    ..Default::default()
                }
                .encode_to_vec(),
            ))),
        }
    }

    fn prost_types_any(t: &str, value: Vec<u8>) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/{t}"),
            value,
        }
    }

    pub fn ledger(instance: &str, ops: Vec<Operation>) -> Vec<u8> {
        let mut out = Vec::new();
        for rec in [
            ledger_record::Record::Header(Header {
                executor: "grpc://127.0.0.1:1".into(),
                invocation_id: "inv".into(),
                instance_names: vec![instance.into()],
                ..Default::default()
            }),
            ledger_record::Record::Page(OperationsPage {
                instance_name: instance.into(),
                response: Some(ListOperationsResponse {
                    operations: ops,
                    next_page_token: String::new(),
                }),
                ..Default::default()
            }),
        ] {
            LedgerRecord { record: Some(rec) }
                .encode_length_delimited(&mut out)
                .unwrap();
        }
        out
    }

    #[test]
    fn executed_actions_and_every_worker_are_read() {
        let bytes = ledger(
            "main",
            vec![
                op("main/op1", "aa", result("bot-1", "hello.txt", "11"), false),
                op("main/op2", "bb", result("bot-2", "x.txt", "22"), true),
                op("main/op3", "aa", result("bot-1", "hello.txt", "11"), false),
            ],
        );
        let l = read_ledger(&bytes).unwrap();
        assert_eq!(l.executor, "grpc://127.0.0.1:1");
        assert_eq!(l.entries.len(), 1, "{l:?}");
        assert_eq!(l.entries[0].action_digest, "aa/140");
        assert_eq!(l.entries[0].operation, "op1");
        assert_eq!(l.entries[0].results.len(), 1);
        assert_eq!(
            l.workers.iter().cloned().collect::<Vec<_>>(),
            ["bot-1", "bot-2"]
        );
    }

    #[test]
    fn a_ledger_without_header_or_with_garbage_is_refused() {
        assert!(read_ledger(b"\x03abc").is_err());
        let mut bytes = Vec::new();
        LedgerRecord {
            record: Some(ledger_record::Record::Page(OperationsPage::default())),
        }
        .encode_length_delimited(&mut bytes)
        .unwrap();
        assert!(matches!(
            read_ledger(&bytes),
            Err(AuditError::BadLedger { .. })
        ));
        assert!(matches!(
            read_ledger(&[]),
            Err(AuditError::BadLedger { .. })
        ));
    }
}
