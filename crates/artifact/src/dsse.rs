//! DSSE (Dead Simple Signing Envelope) v1 with a strict, canonical JSON form.
//!
//! The envelope is `{"payloadType":…,"payload":…,"signatures":[{"keyid":…,"sig":…}]}`
//! with standard, padded base64 and exactly this key order, no whitespace, and
//! a single trailing newline. [`Envelope::parse`] accepts only that byte form.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::keys::keyid;

/// The payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Largest envelope accepted by the parser.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024 * 1024;

/// Why an envelope was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the envelope is {0} bytes, more than the limit of {MAX_ENVELOPE_BYTES}")]
    TooLarge(usize),
    #[error("the envelope is not a DSSE JSON object of exactly payloadType, payload and signatures [{{keyid, sig}}]: {0}")]
    Shape(String),
    #[error("{field} is not canonical standard base64 with padding")]
    Base64 { field: &'static str },
    #[error("the envelope has no signatures; at least one is required")]
    NoSignatures,
    #[error("signature {index} is {len} bytes; an ed25519 signature is 64 bytes")]
    SignatureLength { index: usize, len: usize },
    #[error("payloadType is {0:?}; expected {PAYLOAD_TYPE:?}")]
    PayloadType(String),
    #[error("the envelope JSON is not in canonical form (compact, key order payloadType, payload, signatures, one trailing newline); it was not written by rbe-proof or was re-formatted")]
    NotCanonical,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<RawSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    keyid: String,
    sig: String,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSignature {
    /// Selects the trusted key; an empty keyid tries every trusted key.
    pub keyid: String,
    /// Raw 64-byte ed25519 signature over [`pae`].
    pub sig: Vec<u8>,
}

/// A parsed (not yet verified) DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<EnvelopeSignature>,
}

/// DSSE pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

fn decode_b64(field: &'static str, text: &str) -> Result<Vec<u8>, EnvelopeError> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| EnvelopeError::Base64 { field })?;
    if STANDARD.encode(&bytes) != text {
        return Err(EnvelopeError::Base64 { field });
    }
    Ok(bytes)
}

impl Envelope {
    /// Signs `payload` (of [`PAYLOAD_TYPE`]) with `key`.
    pub fn sign(payload: Vec<u8>, key: &SigningKey) -> Envelope {
        let sig = key.sign(&pae(PAYLOAD_TYPE, &payload));
        Envelope {
            payload_type: PAYLOAD_TYPE.to_string(),
            payload,
            signatures: vec![EnvelopeSignature {
                keyid: keyid(&key.verifying_key()),
                sig: sig.to_bytes().to_vec(),
            }],
        }
    }

    /// The canonical byte form (compact JSON plus `\n`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let raw = RawEnvelope {
            payload_type: self.payload_type.clone(),
            payload: STANDARD.encode(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| RawSignature {
                    keyid: s.keyid.clone(),
                    sig: STANDARD.encode(&s.sig),
                })
                .collect(),
        };
        let mut out = serde_json::to_vec(&raw).expect("serializing strings cannot fail");
        out.push(b'\n');
        out
    }

    /// Strictly parses an envelope: exact fields and types, canonical
    /// base64, at least one 64-byte signature, payloadType [`PAYLOAD_TYPE`],
    /// and the canonical byte form. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        let raw: RawEnvelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Shape(e.to_string()))?;
        if raw.signatures.is_empty() {
            return Err(EnvelopeError::NoSignatures);
        }
        if raw.payload_type != PAYLOAD_TYPE {
            return Err(EnvelopeError::PayloadType(raw.payload_type));
        }
        let payload = decode_b64("payload", &raw.payload)?;
        let mut signatures = Vec::with_capacity(raw.signatures.len());
        for (index, s) in raw.signatures.into_iter().enumerate() {
            let sig = decode_b64("sig", &s.sig)?;
            if sig.len() != Signature::BYTE_SIZE {
                return Err(EnvelopeError::SignatureLength {
                    index,
                    len: sig.len(),
                });
            }
            signatures.push(EnvelopeSignature {
                keyid: s.keyid,
                sig,
            });
        }
        let env = Envelope {
            payload_type: raw.payload_type,
            payload,
            signatures,
        };
        if env.to_bytes() != bytes {
            return Err(EnvelopeError::NotCanonical);
        }
        Ok(env)
    }

    /// Verifies the envelope against `trusted` keys: passes when any
    /// signature verifies (strict ed25519) under a trusted key whose keyid
    /// equals the signature's keyid (an empty keyid tries every trusted key).
    /// Returns the keyid of the key that verified.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<String, String> {
        if trusted.is_empty() {
            return Err("no trusted public keys were given".to_string());
        }
        let message = pae(&self.payload_type, &self.payload);
        let trusted: Vec<(String, &VerifyingKey)> = trusted.iter().map(|k| (keyid(k), k)).collect();
        let mut tried = Vec::new();
        for s in &self.signatures {
            let Ok(sig) = Signature::from_slice(&s.sig) else {
                continue;
            };
            for (id, key) in &trusted {
                if !s.keyid.is_empty() && &s.keyid != id {
                    continue;
                }
                if key.verify_strict(&message, &sig).is_ok() {
                    return Ok(id.clone());
                }
                tried.push(id.clone());
            }
        }
        if tried.is_empty() {
            let ids: Vec<&str> = self.signatures.iter().map(|s| s.keyid.as_str()).collect();
            Err(format!(
                "signed by keyid {} but none of the {} trusted keys has that id; pass the signer's public key",
                ids.join(", "),
                trusted.len()
            ))
        } else {
            Err(format!(
                "the signature does not verify under trusted key {} (the payload or signature was changed)",
                tried.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn pae_matches_the_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_parse_verify() {
        let env = Envelope::sign(b"{\"a\":1}".to_vec(), &key(1));
        let bytes = env.to_bytes();
        let parsed = Envelope::parse(&bytes).unwrap();
        assert_eq!(parsed, env);
        let id = parsed
            .verify(&[key(2).verifying_key(), key(1).verifying_key()])
            .unwrap();
        assert_eq!(id, keyid(&key(1).verifying_key()));
        let err = parsed.verify(&[key(2).verifying_key()]).unwrap_err();
        assert!(err.contains("none of the 1 trusted keys"), "{err}");
        // keyid only selects: an empty keyid tries all keys.
        let mut anon = parsed.clone();
        anon.signatures[0].keyid.clear();
        assert!(anon
            .verify(&[key(2).verifying_key(), key(1).verifying_key()])
            .is_ok());
        // A tampered payload fails.
        let mut bad = parsed.clone();
        bad.payload[2] ^= 1;
        let err = bad.verify(&[key(1).verifying_key()]).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        // Any passing signature among several is enough.
        let mut two = Envelope::sign(b"x".to_vec(), &key(3));
        two.signatures.insert(
            0,
            EnvelopeSignature {
                keyid: keyid(&key(1).verifying_key()),
                sig: vec![0; 64],
            },
        );
        assert!(two
            .verify(&[key(1).verifying_key(), key(3).verifying_key()])
            .is_ok());
        assert!(two.verify(&[key(1).verifying_key()]).is_err());
    }

    #[test]
    fn strict_parser_rejects_deviations() {
        let good = String::from_utf8(Envelope::sign(b"hi".to_vec(), &key(1)).to_bytes()).unwrap();
        let sig = good
            .split("\"sig\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let id = keyid(&key(1).verifying_key());
        type Want = fn(&EnvelopeError) -> bool;
        let cases: Vec<(String, Want)> = vec![
            (good.replace("{\"payloadType\"", "{\"x\":1,\"payloadType\""), |e| matches!(e, EnvelopeError::Shape(_))),
            (good.replace("\"payload\":\"aGk=\",", ""), |e| matches!(e, EnvelopeError::Shape(_))),
            (good.replace("\"aGk=\"", "7"), |e| matches!(e, EnvelopeError::Shape(_))),
            (good.replace("aGk=", "aGk"), |e| matches!(e, EnvelopeError::Base64 { field: "payload" })),
            (good.replace("aGk=", "aGl="), |e| matches!(e, EnvelopeError::Base64 { field: "payload" })),
            (good.replace("aGk=", "aG k="), |e| matches!(e, EnvelopeError::Base64 { .. })),
            (format!("{{\"payloadType\":\"{PAYLOAD_TYPE}\",\"payload\":\"aGk=\",\"signatures\":[]}}\n"), |e| *e == EnvelopeError::NoSignatures),
            (good.replace("in-toto+json", "json"), |e| matches!(e, EnvelopeError::PayloadType(_))),
            (good.replace(&sig, "AAAA"), |e| matches!(e, EnvelopeError::SignatureLength { index: 0, len: 3 })),
            (good.trim_end().to_string(), |e| *e == EnvelopeError::NotCanonical),
            (good.replace(",", ", "), |e| *e == EnvelopeError::NotCanonical),
            (good.replace("aGk=", "\\u0061Gk="), |e| *e == EnvelopeError::NotCanonical),
            (good.replace(&format!("\"keyid\":\"{id}\","), "\"keyid\":7,"), |e| matches!(e, EnvelopeError::Shape(_))),
            (good.replace("]}", "],\"payload\":\"aGk=\"}"), |e| matches!(e, EnvelopeError::Shape(_))),
            ("[]".to_string(), |e| matches!(e, EnvelopeError::Shape(_))),
        ];
        for (text, want) in cases {
            let err = Envelope::parse(text.as_bytes()).unwrap_err();
            assert!(want(&err), "{text}: {err:?}");
        }
        assert!(Envelope::parse(good.as_bytes()).is_ok());
    }
}
