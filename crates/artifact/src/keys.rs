//! ed25519 signing keys in the PEM forms OpenSSL uses: private keys as
//! PKCS#8 (`-----BEGIN PRIVATE KEY-----`), public keys as SPKI
//! (`-----BEGIN PUBLIC KEY-----`). A key's id is the lowercase hex SHA-256
//! of its public key's SPKI DER.

use ed25519_dalek::pkcs8::spki::der::pem::{self, LineEnding};
use ed25519_dalek::pkcs8::spki::{DecodePublicKey, EncodePublicKey, SubjectPublicKeyInfoRef};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, PrivateKeyInfo};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// OID of Ed25519 (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

/// Why a key could not be loaded or written.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("not a PEM document ({0}); expected a `-----BEGIN {1}-----` block as written by `openssl genpkey -algorithm ed25519`")]
    NotPem(String, &'static str),
    #[error("the PEM block is `{found}` but a `{expected}` is needed{hint}")]
    WrongPemType {
        found: String,
        expected: &'static str,
        hint: &'static str,
    },
    #[error("the key's algorithm is {oid}, not Ed25519 (1.3.101.112); create an ed25519 key (`openssl genpkey -algorithm ed25519`)")]
    WrongAlgorithm { oid: String },
    #[error("the {what} DER inside the PEM is malformed: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("could not encode the key: {0}")]
    Encode(String),
}

/// Generates a new ed25519 key pair from the OS random source and returns
/// `(private PKCS#8 PEM, public SPKI PEM)`.
pub fn generate() -> Result<(String, String), KeyError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let private_pem = private_key_pem(&key)?;
    let public_pem = public_key_pem(&key.verifying_key())?;
    Ok((private_pem, public_pem))
}

/// The PKCS#8 PEM form of `key`.
pub fn private_key_pem(key: &SigningKey) -> Result<String, KeyError> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|z| z.to_string())
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// The SPKI PEM form of `key`.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

fn decode_pem(text: &str, expected: &'static str) -> Result<Vec<u8>, KeyError> {
    let (label, der) = pem::decode_vec(text.trim().as_bytes())
        .map_err(|e| KeyError::NotPem(e.to_string(), expected))?;
    if label != expected {
        let hint = match (label, expected) {
            ("ENCRYPTED PRIVATE KEY", _) => {
                "; the key is encrypted: decrypt it first (`openssl pkcs8 -in key.pem -out plain.pem`)"
            }
            ("OPENSSH PRIVATE KEY", _) => {
                "; convert OpenSSH keys to PKCS#8 or create one with `openssl genpkey -algorithm ed25519`"
            }
            ("PRIVATE KEY", "PUBLIC KEY") => {
                "; this is a private key: pass the public key (`openssl pkey -in key.pem -pubout`)"
            }
            ("PUBLIC KEY", "PRIVATE KEY") => "; this is a public key, signing needs the private key",
            _ => "",
        };
        return Err(KeyError::WrongPemType {
            found: label.to_string(),
            expected,
            hint,
        });
    }
    Ok(der)
}

/// Loads an ed25519 private key from PKCS#8 PEM.
pub fn load_private_pem(text: &str) -> Result<SigningKey, KeyError> {
    let der = decode_pem(text, "PRIVATE KEY")?;
    let info = PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| KeyError::Malformed {
        what: "PKCS#8 private key",
        detail: e.to_string(),
    })?;
    let oid = info.algorithm.oid.to_string();
    if oid != ED25519_OID {
        return Err(KeyError::WrongAlgorithm { oid });
    }
    SigningKey::from_pkcs8_der(&der).map_err(|e| KeyError::Malformed {
        what: "PKCS#8 ed25519 private key",
        detail: e.to_string(),
    })
}

/// Loads an ed25519 public key from SPKI PEM.
pub fn load_public_pem(text: &str) -> Result<VerifyingKey, KeyError> {
    let der = decode_pem(text, "PUBLIC KEY")?;
    let info =
        SubjectPublicKeyInfoRef::try_from(der.as_slice()).map_err(|e| KeyError::Malformed {
            what: "SPKI public key",
            detail: e.to_string(),
        })?;
    let oid = info.algorithm.oid.to_string();
    if oid != ED25519_OID {
        return Err(KeyError::WrongAlgorithm { oid });
    }
    VerifyingKey::from_public_key_der(&der).map_err(|e| KeyError::Malformed {
        what: "SPKI ed25519 public key",
        detail: e.to_string(),
    })
}

/// The key id: lowercase hex SHA-256 of the public key's SPKI DER
/// (equal to `openssl pkey -pubin -in pub.pem -outform DER | sha256sum`).
pub fn keyid(key: &VerifyingKey) -> String {
    let der = key
        .to_public_key_der()
        .expect("encoding a 32-byte ed25519 key as SPKI cannot fail");
    hex::encode(Sha256::digest(der.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_round_trip_and_keyid() {
        let (private_pem, public_pem) = generate().unwrap();
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let sk = load_private_pem(&private_pem).unwrap();
        let vk = load_public_pem(&public_pem).unwrap();
        assert_eq!(sk.verifying_key(), vk);
        let id = keyid(&vk);
        assert_eq!(id.len(), 64);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        // SPKI DER of ed25519 = fixed 12-byte prefix + the 32 key bytes.
        let mut der = hex::decode("302a300506032b6570032100").unwrap();
        der.extend_from_slice(vk.as_bytes());
        assert_eq!(id, hex::encode(Sha256::digest(&der)));
        let (_, other) = generate().unwrap();
        assert_ne!(keyid(&load_public_pem(&other).unwrap()), id);
    }

    #[test]
    fn rejects_wrong_type_algorithm_and_garbage() {
        let (private_pem, public_pem) = generate().unwrap();
        let err = load_public_pem(&private_pem).unwrap_err();
        assert!(
            matches!(&err, KeyError::WrongPemType { found, .. } if found == "PRIVATE KEY"),
            "{err}"
        );
        assert!(err.to_string().contains("-pubout"), "{err}");
        let err = load_private_pem(&public_pem).unwrap_err();
        assert!(matches!(err, KeyError::WrongPemType { .. }), "{err}");
        let err = load_private_pem("hello").unwrap_err();
        assert!(matches!(err, KeyError::NotPem(..)), "{err}");
        // A P-256 public key (SPKI, id-ecPublicKey).
        let ec = "-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\n\
q9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n\
-----END PUBLIC KEY-----\n";
        let err = load_public_pem(ec).unwrap_err();
        assert!(
            matches!(&err, KeyError::WrongAlgorithm { oid } if oid == "1.2.840.10045.2.1"),
            "{err}"
        );
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let err = load_public_pem(garbage).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
    }
}
