//! SLSA Verification Summary Attestations (VSA v1) for rbe-proof verdicts.
//!
//! A VSA is a DSSE envelope (the same canonical form as the proof's own,
//! [`crate::dsse`]) around an in-toto Statement v1 whose `predicateType` is
//! [`PREDICATE_TYPE`]. It says: verifier V checked artifact A (subject, by
//! SHA-256) against policy P at time T and the result was PASSED or FAILED,
//! with these rbe-proof levels. Standard supply-chain tools (in-toto's
//! libraries, policy engines, admission controllers) read it without knowing
//! rbe-proof's own predicate. Fields and levels: `docs/proof-format.md` §8.
//!
//! Pure: the report, the statement bytes and the time come in; bytes go out.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::dsse::Envelope;
use crate::keys::{SigningKey, VerifyingKey};
use crate::policy::{Policy, PolicyCheck};
use crate::statement::STATEMENT_TYPE;
use crate::verify::{Report, INTEGRITY_CHECKS};

/// `predicateType` of a SLSA Verification Summary Attestation v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/verification_summary/v1";
/// `verificationResult` when every check passed.
pub const PASSED: &str = "PASSED";
/// `verificationResult` (and the only `verifiedLevels` entry) when a check failed.
pub const FAILED: &str = "FAILED";
/// The artifact has the canonical layout, a valid signature under a trusted
/// key, matching digests, and its signed evidence re-derives from its members.
pub const LEVEL_SIGNED_EVIDENCE: &str = "RBE_PROOF_SIGNED_EVIDENCE_V1";
/// The client's own stream shows a build forced onto a remote executor with
/// at least one remote execution, pinned images and exit code 0, and no
/// source of the evidence contradicts another. A claim: not attested.
pub const LEVEL_REMOTE_CLAIMED: &str = "RBE_PROOF_REMOTE_CLAIMED_V1";
/// `executor_attested` passed: the executor itself recorded at least as many
/// executions for the invocation as the client claims.
pub const LEVEL_EXECUTOR_ATTESTED: &str = "RBE_PROOF_EXECUTOR_ATTESTED_V1";
/// `outputs_bound` passed: every built target's outputs were produced by
/// executions the executor ran for this invocation.
pub const LEVEL_OUTPUTS_BOUND: &str = "RBE_PROOF_OUTPUTS_BOUND_V1";
/// Every level this verifier can state, weakest first.
pub const LEVELS: [&str; 4] = [
    LEVEL_SIGNED_EVIDENCE,
    LEVEL_REMOTE_CLAIMED,
    LEVEL_EXECUTOR_ATTESTED,
    LEVEL_OUTPUTS_BOUND,
];
/// Base of the policy URI; the applied checks follow as `?checks=a,b,c`.
pub const POLICY_URI: &str = "https://rbe-proof.dev/policy/v1";
/// The checks of [`LEVEL_REMOTE_CLAIMED`].
const REMOTE_CLAIMED_CHECKS: [&str; 5] = [
    "executor_forced",
    "remote_executions",
    "image_pinned",
    "build_succeeded",
    "sources_agree",
];

/// A resource descriptor: `{uri, digest: {sha256}}` (in-toto v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    pub uri: String,
    pub digest: Sha256Digest,
}

/// A digest set holding only a SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sha256Digest {
    /// Lowercase hex.
    pub sha256: String,
}

/// The VSA's subject: the artifact file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The artifact's file name (`ID.proof.tar`).
    pub name: String,
    pub digest: Sha256Digest,
}

/// `predicate.verifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verifier {
    /// (SLSA also defines `verifier.version`; the in-toto attestation
    /// bindings' VSA v1 message has no such field, so it is not written.)
    pub id: String,
}

/// The SLSA VSA v1 predicate as rbe-proof writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    pub verifier: Verifier,
    #[serde(rename = "timeVerified")]
    pub time_verified: String,
    #[serde(rename = "resourceUri")]
    pub resource_uri: String,
    pub policy: Descriptor,
    #[serde(rename = "inputAttestations", default)]
    pub input_attestations: Vec<Descriptor>,
    #[serde(rename = "verificationResult")]
    pub verification_result: String,
    #[serde(rename = "verifiedLevels")]
    pub verified_levels: Vec<String>,
    #[serde(rename = "slsaVersion")]
    pub slsa_version: String,
}

/// The in-toto Statement v1 of a VSA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsaStatement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Predicate,
}

/// What the verifier knows beyond the report.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// `verifier.id`: the server's configured URI, or the offline verifier's.
    pub verifier_id: &'a str,
    /// `resourceUri`: the invocation (or its results page).
    pub resource_uri: &'a str,
    /// `timeVerified`, RFC 3339 UTC.
    pub time_verified: time::OffsetDateTime,
    /// The artifact's file name (the subject's name).
    pub artifact_name: &'a str,
    /// The exact bytes of the artifact's `statement.dsse.json`, when it
    /// could be read (an artifact whose layout is broken has none).
    pub statement: Option<&'a [u8]>,
    /// The policy `verify` applied.
    pub policy: &'a Policy,
}

/// The policy's text form: one applied check per line (`instance=NAME` for
/// [`PolicyCheck::Instance`]), in report order. Its SHA-256 is the policy digest.
pub fn policy_text(report: &Report, policy: &Policy) -> String {
    let instance = policy.checks().iter().find_map(|c| match c {
        PolicyCheck::Instance(name) => Some(name.clone()),
        _ => None,
    });
    let mut out = String::new();
    for c in &report.checks {
        if INTEGRITY_CHECKS.contains(&c.name.as_str()) {
            continue;
        }
        match (c.name.as_str(), &instance) {
            ("instance", Some(name)) => out.push_str(&format!("instance={name}")),
            (name, _) => out.push_str(name),
        }
        out.push('\n');
    }
    out
}

/// The policy descriptor: `POLICY_URI?checks=a,b,c` and the SHA-256 of
/// [`policy_text`].
pub fn policy_descriptor(report: &Report, policy: &Policy) -> Descriptor {
    let text = policy_text(report, policy);
    let names: Vec<&str> = report
        .checks
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !INTEGRITY_CHECKS.contains(n))
        .collect();
    Descriptor {
        uri: format!("{POLICY_URI}?checks={}", names.join(",")),
        digest: Sha256Digest {
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
        },
    }
}

/// The levels a report reaches: `["FAILED"]` unless every check passed;
/// otherwise [`LEVEL_SIGNED_EVIDENCE`], plus [`LEVEL_REMOTE_CLAIMED`] when
/// its five checks were applied, plus [`LEVEL_EXECUTOR_ATTESTED`] and
/// [`LEVEL_OUTPUTS_BOUND`] when those checks were applied (all passed).
pub fn levels(report: &Report) -> Vec<String> {
    let has = |n: &str| report.checks.iter().any(|c| c.name == n && c.ok);
    if !report.ok || !INTEGRITY_CHECKS.iter().all(|n| has(n)) {
        return vec![FAILED.to_string()];
    }
    let mut out = vec![LEVEL_SIGNED_EVIDENCE.to_string()];
    if REMOTE_CLAIMED_CHECKS.iter().all(|n| has(n)) {
        out.push(LEVEL_REMOTE_CLAIMED.to_string());
    }
    if has("executor_attested") {
        out.push(LEVEL_EXECUTOR_ATTESTED.to_string());
    }
    if has("outputs_bound") {
        out.push(LEVEL_OUTPUTS_BOUND.to_string());
    }
    out
}

/// The VSA statement for `report`.
pub fn statement(report: &Report, ctx: &Context<'_>) -> VsaStatement {
    let time_verified = ctx
        .time_verified
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(ctx.time_verified)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time formats as RFC 3339");
    let input_attestations = ctx
        .statement
        .map(|s| Descriptor {
            uri: format!("{}#{}", ctx.artifact_name, crate::tar::STATEMENT),
            digest: Sha256Digest {
                sha256: hex::encode(Sha256::digest(s)),
            },
        })
        .into_iter()
        .collect();
    VsaStatement {
        type_: STATEMENT_TYPE.to_string(),
        subject: vec![Subject {
            name: ctx.artifact_name.to_string(),
            digest: Sha256Digest {
                sha256: report.artifact_sha256.clone(),
            },
        }],
        predicate_type: PREDICATE_TYPE.to_string(),
        predicate: Predicate {
            verifier: Verifier {
                id: ctx.verifier_id.to_string(),
            },
            time_verified,
            resource_uri: ctx.resource_uri.to_string(),
            policy: policy_descriptor(report, ctx.policy),
            input_attestations,
            verification_result: if report.ok { PASSED } else { FAILED }.to_string(),
            verified_levels: levels(report),
            slsa_version: "1.0".to_string(),
        },
    }
}

/// Signs the VSA for `report` with `key`: the canonical DSSE envelope bytes
/// (compact JSON and a newline), ready for `ID.vsa.dsse.json`.
pub fn sign(report: &Report, ctx: &Context<'_>, key: &SigningKey) -> Vec<u8> {
    let payload =
        serde_json::to_vec(&statement(report, ctx)).expect("a VSA statement always serializes");
    Envelope::sign(payload, key).to_bytes()
}

/// The exact bytes of an artifact's first member, `statement.dsse.json`,
/// read from the start of the archive; `None` unless its header is the
/// canonical one for that member (a broken artifact has no statement to name).
pub fn read_statement<R: std::io::Read>(mut input: R) -> Option<Vec<u8>> {
    let mut h = [0u8; crate::tar::BLOCK];
    input.read_exact(&mut h).ok()?;
    let field = &h[124..136];
    if field[11] != 0 {
        return None;
    }
    let size = u64::from_str_radix(std::str::from_utf8(&field[..11]).ok()?, 8).ok()?;
    if size > crate::dsse::MAX_ENVELOPE_BYTES as u64
        || crate::tar::header(crate::tar::STATEMENT, size).ok()? != h
    {
        return None;
    }
    let mut out = vec![0u8; usize::try_from(size).ok()?];
    input.read_exact(&mut out).ok()?;
    Some(out)
}

/// What a VSA names of the artifact at `path`: its file name and the exact
/// bytes of its statement ([`read_statement`]; `None` when the file cannot
/// be read or has none).
pub fn subject_of(path: &std::path::Path) -> (String, Option<Vec<u8>>) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let statement = std::fs::File::open(path)
        .ok()
        .and_then(|f| read_statement(std::io::BufReader::new(f)));
    (name, statement)
}

/// The file name of an artifact's VSA: `ID.proof.tar` → `ID.vsa.dsse.json`.
pub fn file_name(artifact_name: &str) -> String {
    let stem = artifact_name
        .strip_suffix(".proof.tar")
        .unwrap_or(artifact_name);
    format!("{stem}.vsa.dsse.json")
}

/// Why a VSA was not accepted.
#[derive(Debug, Error)]
pub enum VsaError {
    #[error("not a DSSE envelope in rbe-proof's canonical form: {0}")]
    Envelope(#[from] crate::dsse::EnvelopeError),
    #[error("the VSA's signature does not verify: {0}")]
    Signature(String),
    #[error("the signed payload is not an in-toto Statement v1 with a SLSA VSA v1 predicate as rbe-proof writes it: {0}")]
    Statement(String),
}

/// A VSA whose signature verified under a trusted key.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The keyid of the key that verified.
    pub keyid: String,
    pub statement: VsaStatement,
}

impl Verified {
    /// `verificationResult` is PASSED.
    pub fn passed(&self) -> bool {
        self.statement.predicate.verification_result == PASSED
    }

    /// `verifiedLevels` names `level`.
    pub fn has_level(&self, level: &str) -> bool {
        self.statement
            .predicate
            .verified_levels
            .iter()
            .any(|l| l == level)
    }
}

/// Parses and verifies a VSA envelope: canonical DSSE, a signature under a
/// trusted key, then (only then) the payload as a Statement v1 with this
/// predicate type, exactly one subject with a 64-hex SHA-256, a result of
/// PASSED or FAILED, and levels consistent with it.
pub fn verify(bytes: &[u8], trusted: &[VerifyingKey]) -> Result<Verified, VsaError> {
    let env = Envelope::parse(bytes)?;
    let keyid = env.verify(trusted).map_err(VsaError::Signature)?;
    let st: VsaStatement =
        serde_json::from_slice(&env.payload).map_err(|e| VsaError::Statement(e.to_string()))?;
    let bad = |m: String| Err(VsaError::Statement(m));
    if st.type_ != STATEMENT_TYPE {
        return bad(format!("_type is {:?}, not {STATEMENT_TYPE:?}", st.type_));
    }
    if st.predicate_type != PREDICATE_TYPE {
        return bad(format!(
            "predicateType is {:?}, not {PREDICATE_TYPE:?}",
            st.predicate_type
        ));
    }
    let hex64 = |d: &str| {
        d.len() == 64
            && d.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if st.subject.len() != 1 || !hex64(&st.subject[0].digest.sha256) {
        return bad("a VSA names exactly one subject (the artifact) by its SHA-256".into());
    }
    let p = &st.predicate;
    match p.verification_result.as_str() {
        PASSED if p.verified_levels.iter().any(|l| l == FAILED) => {
            return bad("verificationResult is PASSED but verifiedLevels says FAILED".into())
        }
        PASSED => {}
        FAILED if p.verified_levels != [FAILED] => {
            return bad("verificationResult is FAILED but verifiedLevels names levels".into())
        }
        FAILED => {}
        other => {
            return bad(format!(
                "verificationResult is {other:?}, not PASSED or FAILED"
            ))
        }
    }
    Ok(Verified {
        keyid,
        statement: st,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Check;

    fn report(names: &[(&str, bool)]) -> Report {
        Report {
            ok: names.iter().all(|(_, ok)| *ok),
            checks: names.iter().map(|(n, ok)| Check::new(n, *ok, "")).collect(),
            evidence: None,
            artifact_sha256: "ab".repeat(32),
        }
    }

    fn full(ok_last: bool) -> Report {
        report(&[
            ("envelope", true),
            ("signature", true),
            ("digests", true),
            ("rederived", true),
            ("executor_forced", true),
            ("remote_executions", true),
            ("image_pinned", true),
            ("build_succeeded", true),
            ("sources_agree", true),
            ("outputs_bound", true),
            ("executor_attested", ok_last),
        ])
    }

    fn ctx<'a>(policy: &'a Policy) -> Context<'a> {
        Context {
            verifier_id: "https://proofs.example/",
            resource_uri: "https://proofs.example/invocations/x",
            time_verified: time::macros::datetime!(2026-12-06 21:00:00.5 UTC),
            artifact_name: "x.proof.tar",
            statement: Some(b"{}\n"),
            policy,
        }
    }

    #[test]
    fn levels_follow_the_checks() {
        assert_eq!(levels(&full(true)), LEVELS.to_vec());
        assert_eq!(levels(&full(false)), vec![FAILED]);
        let offline = report(&[
            ("envelope", true),
            ("signature", true),
            ("digests", true),
            ("rederived", true),
            ("executor_forced", true),
            ("remote_executions", true),
            ("image_pinned", true),
            ("build_succeeded", true),
            ("sources_agree", true),
        ]);
        assert_eq!(
            levels(&offline),
            vec![LEVEL_SIGNED_EVIDENCE, LEVEL_REMOTE_CLAIMED]
        );
    }

    #[test]
    fn sign_and_verify_round_trip_and_refusals() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let policy = Policy::default().check(PolicyCheck::Instance("main".into()));
        let bytes = sign(&full(true), &ctx(&policy), &key);
        let v = verify(&bytes, &[key.verifying_key()]).unwrap();
        assert!(v.passed());
        assert!(v.has_level(LEVEL_OUTPUTS_BOUND));
        let p = &v.statement.predicate;
        assert_eq!(p.time_verified, "2026-12-06T21:00:00Z");
        assert_eq!(p.input_attestations.len(), 1);
        assert_eq!(
            p.input_attestations[0].digest.sha256,
            hex::encode(Sha256::digest(b"{}\n"))
        );
        assert!(p.policy.uri.ends_with("?checks=executor_forced,remote_executions,image_pinned,build_succeeded,sources_agree,outputs_bound,executor_attested"), "{}", p.policy.uri);
        assert_eq!(v.statement.subject[0].digest.sha256, "ab".repeat(32));
        // Wrong key: refused.
        let err = verify(&bytes, &[other.verifying_key()]).unwrap_err();
        assert!(matches!(err, VsaError::Signature(_)), "{err}");
        // A failed report says FAILED and no level.
        let failed = verify(
            &sign(&full(false), &ctx(&policy), &key),
            &[key.verifying_key()],
        )
        .unwrap();
        assert!(!failed.passed());
        assert_eq!(failed.statement.predicate.verified_levels, vec![FAILED]);
        // A PASSED payload with FAILED levels, signed by the key, is refused.
        let mut st = statement(&full(true), &ctx(&policy));
        st.predicate.verified_levels.push(FAILED.into());
        let env = Envelope::sign(serde_json::to_vec(&st).unwrap(), &key).to_bytes();
        assert!(matches!(
            verify(&env, &[key.verifying_key()]),
            Err(VsaError::Statement(_))
        ));
        // The proof's own statement is not a VSA.
        let mut st = statement(&full(true), &ctx(&policy));
        st.predicate_type = crate::statement::predicate_type();
        let env = Envelope::sign(serde_json::to_vec(&st).unwrap(), &key).to_bytes();
        assert!(matches!(
            verify(&env, &[key.verifying_key()]),
            Err(VsaError::Statement(_))
        ));
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name("abc.proof.tar"), "abc.vsa.dsse.json");
    }
}
