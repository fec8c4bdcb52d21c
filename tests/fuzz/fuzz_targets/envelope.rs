//! The DSSE envelope parser: never panics, and whatever it accepts is
//! exactly the canonical form it would write.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_artifact::dsse::Envelope;
use proof_artifact::SigningKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse(data) {
        assert_eq!(env.to_bytes(), data, "accepted a non-canonical envelope");
        assert!(!env.signatures.is_empty());
        let key = SigningKey::from_bytes(&[1; 32]);
        let _ = env.verify(&[key.verifying_key()]);
    }
});
