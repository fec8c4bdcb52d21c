mod common;

use common::*;
use proof_artifact::dsse::Envelope;
use proof_artifact::statement::Statement;
use proof_artifact::tar::{scan, TarWriter, EXECLOG, SUMMARY};

/// Splits an artifact into its (name, bytes) members.
fn members(bytes: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let s = scan(bytes).unwrap();
    s.members
        .iter()
        .map(|m| {
            (
                m.name,
                bytes[m.offset as usize..(m.offset + m.size) as usize].to_vec(),
            )
        })
        .collect()
}

fn build(members: &[(&'static str, Vec<u8>)]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for (name, data) in members {
        w.append(name, data.len() as u64, &mut &data[..]).unwrap();
    }
    w.finish().unwrap()
}

fn failed(report: &proof_artifact::Report) -> &str {
    report
        .first_failure()
        .map(|c| c.name.as_str())
        .unwrap_or("none")
}

#[test]
fn flipping_any_single_byte_fails_an_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let out = record_scenario("remote-build", false, &k, dir.path());
    let good = std::fs::read(&out.path).unwrap();
    assert!(verify_bytes(&good, &k).ok);
    // Every position when small, else every 7th plus every header/boundary region.
    let step = if good.len() <= 64 * 1024 { 1 } else { 7 };
    let mut bytes = good.clone();
    let mut tried = 0;
    for pos in (0..good.len()).filter(|p| p % step == 0 || p % 512 < 16) {
        for flip in [0x01u8, 0x80] {
            bytes[pos] ^= flip;
            let report = verify_bytes(&bytes, &k);
            assert!(
                !report.ok,
                "flipping bit {flip:#x} of byte {pos} went unnoticed"
            );
            let first = failed(&report);
            assert!(
                ["envelope", "signature", "digests"].contains(&first),
                "byte {pos}: first failure {first}"
            );
            bytes[pos] ^= flip;
            tried += 1;
        }
    }
    assert!(tried >= good.len() / step, "{tried}");
    // Truncation at any block boundary and appended bytes fail too.
    for cut in (0..good.len()).step_by(512) {
        assert_eq!(
            failed(&verify_bytes(&good[..cut], &k)),
            "envelope",
            "cut at {cut}"
        );
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&[0u8; 512]);
    assert_eq!(failed(&verify_bytes(&longer, &k)), "envelope");
}

#[test]
fn swapping_members_between_artifacts_fails() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let k = key(1);
    let a = std::fs::read(record_scenario("remote-build", true, &k, da.path()).path).unwrap();
    let b = std::fs::read(record_scenario("remote-test", true, &k, db.path()).path).unwrap();
    let (ma, mb) = (members(&a), members(&b));
    for i in 0..ma.len() {
        assert_eq!(ma[i].0, mb[i].0);
        assert_ne!(
            ma[i].1, mb[i].1,
            "{} is the same in both artifacts",
            ma[i].0
        );
        let mut mixed = ma.clone();
        mixed[i] = mb[i].clone();
        let report = verify_bytes(&build(&mixed), &k);
        // Signed statement vs. foreign member (or foreign statement vs. our members).
        assert_eq!(
            failed(&report),
            "digests",
            "swapping {}: {:?}",
            ma[i].0,
            report.checks
        );
        assert!(report.check("signature").unwrap().ok);
    }
    // Dropping the exec log: the statement names a member that is missing.
    let without: Vec<_> = ma.iter().filter(|m| m.0 != EXECLOG).cloned().collect();
    let report = verify_bytes(&build(&without), &k);
    assert_eq!(failed(&report), "digests");
    assert!(
        report.check("digests").unwrap().detail.contains(EXECLOG),
        "{:?}",
        report.checks
    );
}

fn resigned(
    bytes: &[u8],
    edit: impl Fn(&mut serde_json::Value),
    signer: &proof_artifact::SigningKey,
) -> Vec<u8> {
    let mut ms = members(bytes);
    let env = Envelope::parse(&ms[0].1).unwrap();
    let mut st = Statement::parse(&env.payload).unwrap();
    edit(&mut st.predicate);
    ms[0].1 = Envelope::sign(st.to_bytes(), signer).to_bytes();
    build(&ms)
}

#[test]
fn edited_predicate_resigned_with_another_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let out = record_scenario("remote-cache-hit", true, &k, dir.path());
    let good = std::fs::read(&out.path).unwrap();
    let forged = resigned(
        &good,
        |p| p["processes"]["remote_executions"] = 5.into(),
        &key(2),
    );
    let report = verify_bytes(&forged, &k);
    assert_eq!(failed(&report), "signature");
    assert!(report
        .check("signature")
        .unwrap()
        .detail
        .contains("none of the 1 trusted keys"));
    assert!(report.checks[2..]
        .iter()
        .all(|c| c.detail == "not checked: signature failed"));
    // Even trusting the forger, re-derivation from the stream exposes the edit.
    let report = proof_artifact::verify(
        std::io::Cursor::new(&forged),
        &[key(2).verifying_key()],
        &proof_artifact::Policy::default(),
    )
    .unwrap();
    assert_eq!(failed(&report), "rederived");
    assert!(
        report
            .check("rederived")
            .unwrap()
            .detail
            .contains("processes"),
        "{:?}",
        report.checks
    );
    assert!(report.evidence.is_none());
    assert_eq!(report.checks[4].detail, "not checked: rederived failed");
    // Re-signed with the original key but edited: rederived catches it too.
    let edited = resigned(&good, |p| p["success"] = false.into(), &k);
    assert_eq!(failed(&verify_bytes(&edited, &k)), "rederived");
    // Re-signed unchanged with the right key is still valid (sanity).
    let same = resigned(&good, |_| {}, &k);
    assert_eq!(failed(&verify_bytes(&same, &k)), "remote_executions");
}

#[test]
fn wrong_key_fails_signature() {
    let dir = tempfile::tempdir().unwrap();
    let out = record_scenario("remote-build", true, &key(1), dir.path());
    let bytes = std::fs::read(&out.path).unwrap();
    let report = verify_bytes(&bytes, &key(3));
    assert_eq!(failed(&report), "signature");
    assert!(report.check("envelope").unwrap().ok);
    assert!(!report.ok);
    let none = proof_artifact::verify(
        std::io::Cursor::new(&bytes),
        &[],
        &proof_artifact::Policy::default(),
    )
    .unwrap();
    assert_eq!(failed(&none), "signature");
    // Among several trusted keys, the right one is found.
    let many = proof_artifact::verify(
        std::io::Cursor::new(&bytes),
        &[key(3).verifying_key(), key(1).verifying_key()],
        &proof_artifact::Policy::default(),
    )
    .unwrap();
    assert!(many.ok, "{:?}", many.checks);
}

#[test]
fn reordered_or_reformatted_layouts_fail_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let good = std::fs::read(record_scenario("remote-build", true, &k, dir.path()).path).unwrap();
    let ms = members(&good);
    let mut swapped = ms.clone();
    swapped.swap(1, 2);
    assert_eq!(failed(&verify_bytes(&build(&swapped), &k)), "envelope");
    let mut pretty = ms.clone();
    let v: serde_json::Value = serde_json::from_slice(&pretty[0].1).unwrap();
    pretty[0].1 = serde_json::to_vec_pretty(&v).unwrap();
    let report = verify_bytes(&build(&pretty), &k);
    assert_eq!(failed(&report), "envelope");
    assert!(
        report.checks[0].detail.contains("canonical"),
        "{:?}",
        report.checks[0]
    );
    let mut extra = ms.clone();
    extra.push((SUMMARY, b"again".to_vec()));
    assert_eq!(failed(&verify_bytes(&build(&extra), &k)), "envelope");
}
