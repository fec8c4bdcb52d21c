//! The log's proofs checked by a second implementation written here from
//! RFC 9162 (§2.1.1 MTH by its recursive definition, §2.1.3.2 inclusion and
//! §2.1.4.2 consistency verification), independent of `tlog_tiles`: every
//! tree size 1..=64, every leaf, every pair of sizes, with the file-backed
//! log closed and reopened (a restart) and with a torn tail cut off (a
//! crash). A leaf rewritten on disk, or a truncation followed by different
//! appends, is caught by consistency from an old checkpoint. Hash tiles hold
//! RFC 6962 subtree hashes; the tile-reading client refuses a fork at the
//! same size, a fork that grew, a shrink and another log.

use proof_tlog::{sign_checkpoint, verify_checkpoint, verify_sidecar, FileLog, Hash, Inclusion};
use sha2::{Digest, Sha256};

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RFC 9162 §2.1.1: MTH(D[n]) by the definition (k = largest power of two < n).
fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
    match leaves.len() {
        0 => sha(&[]),
        1 => sha(&[&[0], &leaves[0]]),
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            sha(&[&[1], &mth(&leaves[..k]), &mth(&leaves[k..])])
        }
    }
}

/// RFC 9162 §2.1.3.2.
fn verify_inclusion(index: u64, size: u64, leaf: &[u8], path: &[[u8; 32]], root: [u8; 32]) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnn, mut sn) = (index, size - 1);
    let mut r = sha(&[&[0], leaf]);
    for p in path {
        if sn == 0 {
            return false;
        }
        if fnn & 1 == 1 || fnn == sn {
            r = sha(&[&[1], p, &r]);
            if fnn & 1 == 0 {
                while fnn & 1 == 0 && fnn != 0 {
                    fnn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = sha(&[&[1], &r, p]);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == root
}

/// RFC 9162 §2.1.4.2.
fn verify_consistency(
    first: u64,
    second: u64,
    first_hash: [u8; 32],
    second_hash: [u8; 32],
    proof: &[[u8; 32]],
) -> bool {
    if first == second {
        return proof.is_empty() && first_hash == second_hash;
    }
    if first == 0 || first > second {
        return false;
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<[u8; 32]> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, first_hash);
    }
    let (mut fnn, mut sn) = (first - 1, second - 1);
    while fnn & 1 == 1 {
        fnn >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fnn & 1 == 1 || fnn == sn {
            fr = sha(&[&[1], c, &fr]);
            sr = sha(&[&[1], c, &sr]);
            if fnn & 1 == 0 {
                while fnn & 1 == 0 && fnn != 0 {
                    fnn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = sha(&[&[1], &sr, c]);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    fr == first_hash && sr == second_hash && sn == 0
}

fn raw(v: &[Hash]) -> Vec<[u8; 32]> {
    v.iter().map(|h| h.0).collect()
}

/// A statement-like leaf of varying length.
fn leaf(i: usize) -> Vec<u8> {
    format!(
        "{{\"payloadType\":\"application/vnd.in-toto+json\",\"n\":{i},\"pad\":\"{}\"}}\n",
        "x".repeat(i * 7 % 50)
    )
    .into_bytes()
}

#[test]
fn every_proof_of_every_size_up_to_64_verifies_by_rfc9162_across_restarts_and_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    let mut log = FileLog::open(dir.path()).unwrap();
    let mut roots = vec![sha(&[])];
    for i in 0..64 {
        leaves.push(leaf(i));
        assert_eq!(log.append(&leaves[i]).unwrap(), i as u64);
        // Appending the same statement again neither adds nor doubles it.
        assert_eq!(log.append(&leaves[i]).unwrap(), i as u64);
        if i % 9 == 4 {
            // A restart: drop and reopen.
            drop(log);
            log = FileLog::open(dir.path()).unwrap();
        }
        if i % 13 == 7 {
            // A crash mid-append of a leaf that was never acknowledged: a
            // partial record and blocks that read as zeros. Reopening cuts them.
            drop(log);
            let p = dir.path().join("leaves");
            let mut bytes = std::fs::read(&p).unwrap();
            bytes.extend_from_slice(&[0u8; 64]);
            bytes.extend_from_slice(&[0xab; 17]);
            std::fs::write(&p, &bytes).unwrap();
            log = FileLog::open(dir.path()).unwrap();
            assert_eq!(
                std::fs::metadata(&p).unwrap().len(),
                (i as u64 + 1) * 32,
                "the torn tail was cut off"
            );
        }
        let size = i as u64 + 1;
        let root = log.with_tree(|t| t.root());
        assert_eq!(root.0, mth(&leaves), "MTH of {size} leaves");
        roots.push(root.0);
    }
    let (mut inclusions, mut consistencies) = (0, 0);
    log.with_tree(|t| {
        for size in 1..=64u64 {
            let root = t.root_at(size).unwrap();
            assert_eq!(root.0, roots[size as usize]);
            for index in 0..size {
                let path = raw(&t.inclusion(index, size).unwrap());
                assert!(
                    verify_inclusion(index, size, &leaves[index as usize], &path, root.0),
                    "inclusion of {index} in {size}"
                );
                // The wrong leaf, or the right leaf at another index, fails.
                assert!(!verify_inclusion(index, size, b"other", &path, root.0));
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(
                        !verify_inclusion(other, size, &leaves[index as usize], &path, root.0)
                            || path.is_empty()
                    );
                }
                inclusions += 1;
            }
            for old in 1..=size {
                let proof = raw(&t.consistency(old, size).unwrap());
                assert!(
                    verify_consistency(old, size, roots[old as usize], root.0, &proof),
                    "consistency {old} -> {size}"
                );
                if old < size {
                    // Against another old root it fails.
                    let mut bad = roots[old as usize];
                    bad[0] ^= 1;
                    assert!(!verify_consistency(old, size, bad, root.0, &proof));
                }
                consistencies += 1;
            }
        }
    });
    assert_eq!((inclusions, consistencies), (2080, 2080));
}

#[test]
fn a_rewritten_log_fails_consistency_from_an_old_checkpoint() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
    let origin = "rbe-proof.test/log";
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path()).unwrap();
    for i in 0..20 {
        log.append(&leaf(i)).unwrap();
    }
    let old = log.with_tree(|t| t.root());
    let old_note = sign_checkpoint(origin, 20, old, &key).unwrap();
    let head =
        verify_checkpoint(old_note.as_bytes(), &[key.verifying_key()], Some(origin)).unwrap();
    assert_eq!(head.size, 20);
    drop(log);
    let p = dir.path().join("leaves");
    let honest = std::fs::read(&p).unwrap();

    // 1. One leaf changed on disk (leaf 5 is another statement), then growth.
    let mut bytes = honest.clone();
    let forged = proof_tlog::leaf_hash(b"a statement that was never signed");
    bytes[5 * 32..6 * 32].copy_from_slice(&forged.0);
    std::fs::write(&p, &bytes).unwrap();
    let log = FileLog::open(dir.path()).unwrap();
    for i in 20..30 {
        log.append(&leaf(i)).unwrap();
    }
    log.with_tree(|t| {
        let proof = raw(&t.consistency(20, 30).unwrap());
        assert!(!verify_consistency(20, 30, head.root.0, t.root().0, &proof));
    });
    drop(log);

    // 2. Truncated to 12 leaves, then different appends up to 25.
    std::fs::write(&p, &honest[..12 * 32]).unwrap();
    let log = FileLog::open(dir.path()).unwrap();
    for i in 100..113 {
        log.append(&leaf(i)).unwrap();
    }
    log.with_tree(|t| {
        assert_eq!(t.size(), 25);
        let proof = raw(&t.consistency(20, 25).unwrap());
        assert!(!verify_consistency(20, 25, head.root.0, t.root().0, &proof));
    });
    drop(log);

    // 3. The honest log, grown: consistent.
    std::fs::write(&p, &honest).unwrap();
    let log = FileLog::open(dir.path()).unwrap();
    for i in 20..25 {
        log.append(&leaf(i)).unwrap();
    }
    log.with_tree(|t| {
        let proof = raw(&t.consistency(20, 25).unwrap());
        assert!(verify_consistency(20, 25, head.root.0, t.root().0, &proof));
    });
}

#[test]
fn the_inclusion_sidecar_verifies_only_the_logged_statement_under_the_log_key() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[12; 32]);
    let other = ed25519_dalek::SigningKey::from_bytes(&[13; 32]);
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path()).unwrap();
    for i in 0..7 {
        log.append(&leaf(i)).unwrap();
    }
    let (root, path) = log.with_tree(|t| (t.root(), t.inclusion(3, 7).unwrap()));
    let note = sign_checkpoint("o.test/log", 7, root, &key).unwrap();
    let side = Inclusion::new(3, 7, root, &path, note).to_bytes();
    let head = verify_sidecar(&leaf(3), &side, &[key.verifying_key()], None).unwrap();
    assert_eq!(head.size, 7);
    let err = verify_sidecar(&leaf(4), &side, &[key.verifying_key()], None).unwrap_err();
    assert!(err.contains("not leaf 3"), "{err}");
    let err = verify_sidecar(&leaf(3), &side, &[other.verifying_key()], None).unwrap_err();
    assert!(err.contains("not signed by a trusted key"), "{err}");
    // A sidecar whose root is not the checkpoint's.
    let mut inc: Inclusion = serde_json::from_slice(&side).unwrap();
    inc.root_hash = hex::encode([0u8; 32]);
    let err = verify_sidecar(&leaf(3), &inc.to_bytes(), &[key.verifying_key()], None).unwrap_err();
    assert!(err.contains("its signed checkpoint says"), "{err}");
}

#[test]
fn hash_tiles_hold_rfc6962_subtree_hashes() {
    let leaves: Vec<Vec<u8>> = (0..300).map(leaf).collect();
    let t = proof_tlog::Tree::from_leaf_hashes(leaves.iter().map(|l| proof_tlog::leaf_hash(l)));
    // Level 0: the leaf hashes; the right edge is a partial tile of 44.
    let full = t.tile("tile/0/000", 300).unwrap();
    for (i, h) in full.chunks_exact(32).enumerate() {
        assert_eq!(h, sha(&[&[0], &leaves[i]]));
    }
    let edge = t.tile("tile/0/001.p/44", 300).unwrap();
    assert_eq!(edge.len(), 44 * 32);
    assert_eq!(&edge[43 * 32..], sha(&[&[0], &leaves[299]]));
    // Level 1: one hash per full 256-leaf subtree, its MTH.
    let up = t.tile("tile/1/000.p/1", 300).unwrap();
    assert_eq!(up, mth(&leaves[..256]).to_vec());
}

/// A log served from memory, as `proof log --store` serves one from disk.
struct Served {
    tree: proof_tlog::Tree,
    note: Vec<u8>,
}

impl proof_tlog::client::Fetch for Served {
    fn checkpoint(&self) -> Result<Vec<u8>, String> {
        Ok(self.note.clone())
    }
    fn tile(&self, path: &str) -> Result<Vec<u8>, String> {
        self.tree
            .tile(path, self.tree.size())
            .ok_or_else(|| format!("no tile {path}"))
    }
}

#[test]
fn consistency_client_refuses_a_fork_at_the_same_size_a_shrink_and_another_origin() {
    use proof_tlog::client::{check_consistency, prove_inclusion, ClientError};
    let key = ed25519_dalek::SigningKey::from_bytes(&[21; 32]);
    let origin = "rbe-proof.test/log";
    let tree = |n: usize, fork: bool| {
        proof_tlog::Tree::from_leaf_hashes((0..n).map(|i| {
            if fork && i == 3 {
                proof_tlog::leaf_hash(b"forked")
            } else {
                proof_tlog::leaf_hash(&leaf(i))
            }
        }))
    };
    let served = |t: proof_tlog::Tree, origin: &str| Served {
        note: sign_checkpoint(origin, t.size(), t.root(), &key)
            .unwrap()
            .into_bytes(),
        tree: t,
    };
    let old = served(tree(10, false), origin);
    let trusted = [key.verifying_key()];
    // Honest growth.
    let grown = served(tree(300, false), origin);
    let (o, n, _) = check_consistency(&grown, &trusted, &old.note).unwrap();
    assert_eq!((o.size, n.size), (10, 300));
    // The same size, another root (a fork signed by the key).
    let fork = served(tree(10, true), origin);
    assert!(matches!(
        check_consistency(&fork, &trusted, &old.note),
        Err(ClientError::Inconsistent { .. })
    ));
    // A fork that grew.
    let fork = served(tree(300, true), origin);
    assert!(matches!(
        check_consistency(&fork, &trusted, &old.note),
        Err(ClientError::Inconsistent { .. })
    ));
    // A shrink.
    let small = served(tree(7, false), origin);
    assert!(matches!(
        check_consistency(&small, &trusted, &old.note),
        Err(ClientError::Inconsistent { .. })
    ));
    // Another log's checkpoint.
    let other = served(tree(300, false), "another.test/log");
    assert!(matches!(
        check_consistency(&other, &trusted, &old.note),
        Err(ClientError::Checkpoint(_))
    ));
    // Inclusion through tiles: found at its index past the first tile, and
    // a statement never logged is said to be so.
    let inc = prove_inclusion(&grown, &trusted, &leaf(290)).unwrap();
    assert_eq!((inc.leaf_index, inc.tree_size), (290, 300));
    let path: Vec<[u8; 32]> = inc
        .hashes
        .iter()
        .map(|h| hex::decode(h).unwrap().try_into().unwrap())
        .collect();
    assert!(verify_inclusion(
        290,
        300,
        &leaf(290),
        &path,
        grown.tree.root().0
    ));
    assert!(matches!(
        prove_inclusion(&grown, &trusted, b"never logged"),
        Err(ClientError::NotLogged { size: 300 })
    ));
}
