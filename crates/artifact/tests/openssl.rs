//! Interop: artifacts verify with plain OpenSSL, and OpenSSL keys load.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use proof_artifact::dsse::{pae, Envelope};
use proof_artifact::keys::public_key_pem;
use proof_artifact::tar::scan;

const OPENSSL: &str = "/usr/bin/openssl";

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    assert!(
        Path::new(OPENSSL).exists(),
        "{OPENSSL} is required for the interop test"
    );
    let out = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    out
}

#[test]
fn openssl_verifies_the_dsse_signature_and_keyid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A key created by OpenSSL signs the artifact.
    let gen = openssl(&["genpkey", "-algorithm", "ed25519", "-out", "key.pem"], d);
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let sk = proof_artifact::load_private_pem(&std::fs::read_to_string(d.join("key.pem")).unwrap())
        .unwrap();
    let pubout = openssl(&["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"], d);
    assert!(pubout.status.success());
    let vk = proof_artifact::load_public_pem(&std::fs::read_to_string(d.join("pub.pem")).unwrap())
        .unwrap();
    assert_eq!(vk, sk.verifying_key());
    assert_eq!(
        public_key_pem(&vk).unwrap(),
        std::fs::read_to_string(d.join("pub.pem")).unwrap()
    );

    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = record_scenario("remote-build", true, &sk, &out_dir);
    let bytes = std::fs::read(&out.path).unwrap();
    let env = Envelope::parse(&scan(&bytes[..]).unwrap().statement).unwrap();
    std::fs::write(d.join("pae.bin"), pae(&env.payload_type, &env.payload)).unwrap();
    std::fs::write(d.join("sig.bin"), &env.signatures[0].sig).unwrap();

    let args = [
        "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "pae.bin",
        "-sigfile", "sig.bin",
    ];
    let ok = openssl(&args, d);
    assert!(
        ok.status.success(),
        "openssl rejected a valid signature: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("Signature Verified Successfully"));

    // A changed payload is rejected by OpenSSL too.
    let mut bad = pae(&env.payload_type, &env.payload);
    let last = bad.len() - 2;
    bad[last] ^= 1;
    std::fs::write(d.join("pae.bin"), bad).unwrap();
    assert!(!openssl(&args, d).status.success());

    // keyid = sha256 of the SPKI DER OpenSSL writes.
    let der = openssl(&["pkey", "-pubin", "-in", "pub.pem", "-outform", "DER"], d);
    assert!(der.status.success());
    use sha2::Digest;
    assert_eq!(
        env.signatures[0].keyid,
        hex::encode(sha2::Sha256::digest(&der.stdout))
    );
    assert_eq!(env.signatures[0].keyid, proof_artifact::keyid(&vk));
}
