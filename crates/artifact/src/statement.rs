//! The in-toto Statement v1 carried in the DSSE envelope.

use proof_evidence::{Evidence, PREDICATE_VERSION};
use serde::{Deserialize, Serialize};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Prefix of the predicate type; the evidence's [`PREDICATE_VERSION`] follows.
pub const PREDICATE_TYPE_PREFIX: &str = "https://rbe-proof.dev/remote-execution/";

/// `https://rbe-proof.dev/remote-execution/<PREDICATE_VERSION>`.
pub fn predicate_type() -> String {
    format!("{PREDICATE_TYPE_PREFIX}{PREDICATE_VERSION}")
}

/// A subject's digest set; rbe-proof uses SHA-256 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestSet {
    /// Lowercase hex.
    pub sha256: String,
}

/// One artifact member named by the statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The member's name inside the tar.
    pub name: String,
    pub digest: DigestSet,
}

/// An in-toto Statement v1 whose predicate is the [`Evidence`] JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    /// One entry per tar member after `statement.dsse.json`, in tar order.
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

impl Statement {
    /// A statement over `subjects` (name, sha256) asserting `evidence`.
    pub fn new(
        subjects: &[(&str, [u8; 32])],
        evidence: &Evidence,
    ) -> Result<Self, serde_json::Error> {
        Ok(Statement {
            type_: STATEMENT_TYPE.to_string(),
            subject: subjects
                .iter()
                .map(|(name, digest)| Subject {
                    name: (*name).to_string(),
                    digest: DigestSet {
                        sha256: hex::encode(digest),
                    },
                })
                .collect(),
            predicate_type: predicate_type(),
            predicate: serde_json::to_value(evidence)?,
        })
    }

    /// Compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Value-based statement always serializes")
    }

    /// Strict parse: exact fields, this `_type` and predicate type, subject
    /// digests of 64 lowercase hex digits. The error says what was wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let st: Statement = serde_json::from_slice(bytes).map_err(|e| {
            format!("the signed payload is not an in-toto Statement of this format: {e}")
        })?;
        if st.type_ != STATEMENT_TYPE {
            return Err(format!(
                "_type is {:?}; expected {STATEMENT_TYPE:?}",
                st.type_
            ));
        }
        if st.predicate_type != predicate_type() {
            return Err(format!(
                "predicateType is {:?}; this verifier understands {:?} (use a verifier of the matching version)",
                st.predicate_type,
                predicate_type()
            ));
        }
        for s in &st.subject {
            let d = &s.digest.sha256;
            if d.len() != 64
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "subject {:?} has sha256 {d:?}, not 64 lowercase hex digits",
                    s.name
                ));
            }
        }
        Ok(st)
    }
}
