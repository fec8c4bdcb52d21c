//! C2SP checkpoints (`c2sp.org/tlog-checkpoint`) as C2SP signed notes
//! (`c2sp.org/signed-note`) under the server's ed25519 key; the key name is
//! the log's origin.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, Signer, StandardVerifier, Verifier, VerifierList};
use thiserror::Error;
use tlog_tiles::{Checkpoint, Hash};

/// A verified tree head.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Why a checkpoint was not accepted.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("not a signed note (c2sp.org/signed-note): {0}")]
    Note(String),
    #[error("the note's text is not a checkpoint (origin, tree size, base64 root hash)")]
    Checkpoint,
    #[error("the checkpoint of {origin} is not signed by a trusted key under that name: {detail}")]
    Signature { origin: String, detail: String },
    #[error("the checkpoint's origin is {found:?}, expected {expected:?}")]
    Origin { found: String, expected: String },
}

struct KeySigner<'a> {
    name: &'a str,
    key: &'a SigningKey,
}

impl Signer for KeySigner<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn key_id(&self) -> u32 {
        let pubkey = [&[0x01u8][..], self.key.verifying_key().as_bytes()].concat();
        signed_note::key_id(self.name, &pubkey)
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// The verifier key of the log (`ORIGIN+KEYID+BASE64`, the form witnesses
/// and monitors are configured with).
pub fn note_verifier_key(origin: &str, key: &VerifyingKey) -> String {
    signed_note::new_ed25519_verifier_key(origin, key)
}

/// The signed checkpoint of a tree of `size` leaves with root `root`.
pub fn sign_checkpoint(
    origin: &str,
    size: u64,
    root: Hash,
    key: &SigningKey,
) -> Result<String, CheckpointError> {
    let cp = Checkpoint::new(origin, size, root, "").map_err(|_| CheckpointError::Checkpoint)?;
    let mut note =
        Note::new(&cp.to_bytes(), &[]).map_err(|e| CheckpointError::Note(e.to_string()))?;
    note.add_sigs(&[&KeySigner { name: origin, key }])
        .map_err(|e| CheckpointError::Note(e.to_string()))?;
    String::from_utf8(note.to_bytes()).map_err(|e| CheckpointError::Note(e.to_string()))
}

/// Parses a signed checkpoint and verifies its signature under one of
/// `trusted` (with the checkpoint's origin as the key name); with
/// `origin`, the checkpoint must be that log's.
pub fn verify_checkpoint(
    note: &[u8],
    trusted: &[VerifyingKey],
    origin: Option<&str>,
) -> Result<Head, CheckpointError> {
    let parsed = Note::from_bytes(note).map_err(|e| CheckpointError::Note(e.to_string()))?;
    let cp = Checkpoint::from_bytes(parsed.text()).map_err(|_| CheckpointError::Checkpoint)?;
    if let Some(want) = origin {
        if cp.origin() != want {
            return Err(CheckpointError::Origin {
                found: cp.origin().to_string(),
                expected: want.to_string(),
            });
        }
    }
    let verifiers: Vec<Box<dyn Verifier>> = trusted
        .iter()
        .filter_map(|k| StandardVerifier::new(&note_verifier_key(cp.origin(), k)).ok())
        .map(|v| Box::new(v) as Box<dyn Verifier>)
        .collect();
    parsed
        .verify(&VerifierList::new(verifiers))
        .map_err(|e| CheckpointError::Signature {
            origin: cp.origin().to_string(),
            detail: e.to_string(),
        })?;
    Ok(Head {
        origin: cp.origin().to_string(),
        size: cp.size(),
        root: *cp.hash(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let other = SigningKey::from_bytes(&[6; 32]);
        let root = Hash([7; 32]);
        let note = sign_checkpoint("rbe-proof.example/log", 42, root, &key).unwrap();
        let mut lines = note.lines();
        assert_eq!(lines.next(), Some("rbe-proof.example/log"));
        assert_eq!(lines.next(), Some("42"));
        assert_eq!(
            lines.next(),
            Some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
        );
        assert_eq!(lines.next(), Some(""));
        assert!(lines
            .next()
            .unwrap()
            .starts_with("— rbe-proof.example/log "));
        let head = verify_checkpoint(note.as_bytes(), &[key.verifying_key()], None).unwrap();
        assert_eq!((head.size, head.root), (42, root));
        assert!(matches!(
            verify_checkpoint(note.as_bytes(), &[other.verifying_key()], None),
            Err(CheckpointError::Signature { .. })
        ));
        assert!(matches!(
            verify_checkpoint(note.as_bytes(), &[key.verifying_key()], Some("x/y")),
            Err(CheckpointError::Origin { .. })
        ));
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(verify_checkpoint(forged.as_bytes(), &[key.verifying_key()], None).is_err());
    }
}
