//! Crash recovery: torn tails, corruption, hostile journal bytes (kill -9: kill9.rs).

use proof_store::journal::{self, scan};
use proof_store::{AppendFlags, FsStore, Store};
use proof_testkit::fixtures::{check_records, meta, read_all, recs, Rng};

/// Writes three frames (seq 1-4, 5-9, 10-12); returns the journal bytes and frame starts.
fn three_frames(store: &FsStore) -> (Vec<u8>, [u64; 3]) {
    store.open_invocation(&meta("torn")).unwrap();
    let mut starts = [0u64; 3];
    for (i, (from, n)) in [(1, 4), (5, 5), (10, 3)].into_iter().enumerate() {
        starts[i] = store.state("torn").unwrap().unwrap().journal_bytes;
        let flags = AppendFlags {
            saw_build_finished: i == 1,
            saw_last_message: i == 2,
            ..Default::default()
        };
        store.append("torn", &recs(from, n), flags).unwrap();
    }
    let bytes = std::fs::read(store.journal_path("torn")).unwrap();
    (bytes, starts)
}

/// Reopens after the journal was damaged inside the last frame; checks the cut.
fn reopen_and_check(dir: &std::path::Path, last_start: u64, what: &str) {
    let store = FsStore::open(dir).unwrap();
    let rep = store.recovery_report();
    assert_eq!(rep.torn.len(), 1, "{what}: {rep:?}");
    let t = &rep.torn[0];
    assert_eq!(t.good_len, last_start, "{what}: {t:?}");
    assert_eq!(t.last_seq, 9, "{what}");
    assert!(t.quarantined_to.as_ref().unwrap().exists(), "{what}");
    let st = store.state("torn").unwrap().unwrap();
    assert_eq!(st.last_seq, 9, "{what}");
    assert!(st.saw_build_finished, "{what}");
    assert!(
        !st.saw_last_message,
        "{what}: the flag of the cut frame must be gone"
    );
    assert_eq!(
        std::fs::metadata(store.journal_path("torn")).unwrap().len(),
        last_start
    );
    check_records(&read_all(&store, "torn"), 9);
    // Appending continues right after the last good record.
    store
        .append("torn", &recs(10, 2), AppendFlags::default())
        .unwrap();
    check_records(&read_all(&store, "torn"), 11);
}

#[test]
fn torn_tail_truncated_at_every_offset_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let (bytes, starts) = three_frames(&store);
    let path = store.journal_path("torn");
    drop(store);
    let last = starts[2] as usize;
    assert!(bytes.len() - last > journal::FRAME_HEADER_LEN);
    for cut in last + 1..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        reopen_and_check(dir.path(), last as u64, &format!("truncated at {cut}"));
    }
    // Cut exactly at a frame boundary: nothing torn, state corrected from the journal.
    std::fs::write(&path, &bytes[..last]).unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    assert!(store.recovery_report().torn.is_empty());
    assert_eq!(store.recovery_report().corrected_states, ["torn"]);
    assert_eq!(store.state("torn").unwrap().unwrap().last_seq, 9);
}

#[test]
fn corrupt_byte_in_last_frame_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let (bytes, starts) = three_frames(&store);
    let path = store.journal_path("torn");
    drop(store);
    let last = starts[2] as usize;
    for at in last..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x5a;
        std::fs::write(&path, &b).unwrap();
        reopen_and_check(dir.path(), last as u64, &format!("byte {at} flipped"));
    }
    // Garbage appended after a complete journal is cut as well.
    let mut b = bytes.clone();
    b.extend_from_slice(b"RBF1 garbage");
    std::fs::write(&path, &b).unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().torn[0].good_len, bytes.len() as u64);
    assert_eq!(store.state("torn").unwrap().unwrap().last_seq, 12);
}

#[test]
fn corruption_in_an_earlier_frame_cuts_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let (mut bytes, starts) = three_frames(&store);
    let path = store.journal_path("torn");
    drop(store);
    bytes[starts[1] as usize + 40] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let t = &store.recovery_report().torn[0];
    assert_eq!(t.good_len, starts[1]);
    assert!(t.reason.contains("checksum"), "{}", t.reason);
    assert_eq!(t.file_len, bytes.len() as u64);
    check_records(&read_all(&store, "torn"), 4);
    // The cut bytes are kept for inspection.
    let q = std::fs::read(t.quarantined_to.as_ref().unwrap()).unwrap();
    assert_eq!(q, bytes[starts[1] as usize..]);
}

#[test]
fn bad_journal_header_is_reported_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    store.open_invocation(&meta("hdr")).unwrap();
    let path = store.journal_path("hdr");
    drop(store);
    std::fs::write(&path, b"RBEPJNL\0\x01\x00").unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let errs = &store.recovery_report().errors;
    assert_eq!(errs.len(), 1);
    assert!(errs[0].1.contains("header"), "{:?}", errs);
    assert!(path.exists());
}

fn valid_journal() -> Vec<u8> {
    let mut b = journal::encode_header(&meta("fz"));
    b.extend(journal::encode_batch(&recs(1, 3), AppendFlags::default()).unwrap());
    b.extend(
        journal::encode_batch(
            &recs(4, 40),
            AppendFlags {
                saw_stream_finished: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    b.extend(journal::encode_flags_frame(44, AppendFlags::default()).unwrap());
    b
}

#[test]
fn scan_of_a_valid_journal() {
    let b = valid_journal();
    let r = scan(&b);
    assert_eq!(r.error, None);
    assert_eq!(r.meta, Some(meta("fz")));
    assert_eq!(r.frames, 3);
    assert_eq!(r.good_len, b.len() as u64);
    assert_eq!(r.state.last_seq, 43);
    assert!(r.state.saw_stream_finished);
}

#[test]
fn scan_never_panics_on_mutated_input() {
    let base = valid_journal();
    let mut rng = Rng(0x5eed);
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..=rng.below(4) {
            if b.is_empty() {
                break;
            }
            match rng.below(4) {
                0 => {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] = rng.next_u64() as u8;
                }
                1 => b.truncate(rng.below(b.len() as u64 + 1) as usize),
                2 => {
                    let i = rng.below(b.len() as u64 + 1) as usize;
                    b.insert(i, rng.next_u64() as u8);
                }
                _ => {
                    // Huge lengths in a frame header.
                    let i = rng.below(b.len() as u64) as usize;
                    let end = (i + 4).min(b.len());
                    b[i..end].fill(0xff);
                }
            }
        }
        let r = scan(&b);
        assert!(r.good_len <= b.len() as u64);
        if r.error.is_none() {
            assert_eq!(r.good_len, b.len() as u64);
        }
    }
    for len in 0..64 {
        let junk: Vec<u8> = (0..len)
            .map(|_| Rng::from_time().next_u64() as u8)
            .collect();
        let _ = scan(&junk);
    }
}
