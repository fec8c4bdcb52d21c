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

/// The shell recipe of docs/proof-format.md §5, run as written.
#[test]
fn documented_openssl_recipe_checks_an_artifact() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/proof-format.md"),
    )
    .unwrap();
    let section = doc
        .split("## 5.")
        .nth(1)
        .expect("section 5 of the format doc");
    let script = section
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = key(4);
    let out = record_scenario("remote-build", true, &k, d);
    std::fs::write(
        d.join("pub.pem"),
        public_key_pem(&k.verifying_key()).unwrap(),
    )
    .unwrap();
    std::fs::write(d.join("check.sh"), script).unwrap();
    let run = |art: &Path| {
        Command::new("sh")
            .arg("check.sh")
            .env("ART", art)
            .env("PUB", "pub.pem")
            .env(
                "PATH",
                format!(
                    "/usr/bin:/bin:{}",
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .current_dir(d)
            .output()
            .unwrap()
    };
    let ok = run(&out.path);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("Signature Verified Successfully"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&proof_artifact::keyid(&k.verifying_key())),
        "{stdout}"
    );
    for member in ["events.bep.zst: OK", "execlog.bin: OK", "summary.md: OK"] {
        assert!(stdout.contains(member), "{member} missing in {stdout}");
    }
    // A swapped summary fails the recipe's digest check.
    let mut bytes = std::fs::read(&out.path).unwrap();
    let s = scan(&bytes[..]).unwrap();
    let m = s.member("summary.md").unwrap();
    bytes[m.offset as usize + 3] ^= 0x20;
    let bad_path = d.join("bad.proof.tar");
    std::fs::write(&bad_path, &bytes).unwrap();
    let bad = run(&bad_path);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("summary.md: FAILED"));
}
