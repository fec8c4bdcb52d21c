//! Shared helpers: the example platform (examples/platform) and its real
//! artifacts, found by content (repo, command, failed check) so that
//! regenerating them with make-proofs.sh needs no test edits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use proof_artifact::{Policy, VerifyingKey};
use proof_manifest::ArtifactFacts;

pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/platform")
}

pub fn manifest_path() -> PathBuf {
    example().join("config/rbe-target-eligibility.json")
}

pub fn manifest_text() -> String {
    std::fs::read_to_string(manifest_path()).unwrap()
}

pub fn key() -> VerifyingKey {
    let pem = std::fs::read_to_string(example().join("keys/proof.pub")).unwrap();
    proof_artifact::load_public_pem(&pem).unwrap()
}

/// A key that did not sign anything here.
pub fn other_key() -> VerifyingKey {
    let (_, public) = proof_artifact::generate().unwrap();
    proof_artifact::load_public_pem(&public).unwrap()
}

pub fn facts_with(path: &Path, keys: &[VerifyingKey]) -> ArtifactFacts {
    let report = proof_artifact::verify_path(path, keys, &Policy::default()).unwrap();
    ArtifactFacts::from_report(path.file_name().unwrap().to_string_lossy(), &report, keys)
}

pub fn facts(path: &Path) -> ArtifactFacts {
    facts_with(path, &[key()])
}

fn tars(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".proof.tar"))
        .collect();
    v.sort();
    v
}

/// The passing example artifact of `repo` made by `bazel COMMAND`.
pub fn artifact(repo: &str, command: &str) -> PathBuf {
    tars(&example().join("proofs"))
        .into_iter()
        .find(|p| {
            let f = facts(p);
            let ev = f.evidence.as_ref().unwrap();
            ev.build_metadata.get("REPO").map(String::as_str) == Some(repo) && ev.command == command
        })
        .unwrap_or_else(|| panic!("no {command} artifact of {repo} in examples/platform/proofs"))
}

/// The rejected example artifact whose policy check `check` fails first.
pub fn rejected(check: &str) -> PathBuf {
    tars(&example().join("rejected"))
        .into_iter()
        .find(|p| {
            facts(p)
                .checks
                .iter()
                .find(|c| !c.ok)
                .is_some_and(|c| c.name == check)
        })
        .unwrap_or_else(|| panic!("no rejected artifact failing {check}"))
}

/// Lines of `new` that are not in `old` at the same position, assuming
/// an insertion/replacement within one region: returns the range of
/// differing lines of `new` (first..last, inclusive) after stripping the
/// common prefix and suffix.
pub fn changed_region(old: &str, new: &str) -> Option<(usize, usize)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a == b {
        return None;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    Some((prefix, b.len() - suffix))
}

/// The line range (start, end exclusive) of class `id`'s object in the
/// canonical text.
pub fn class_block(text: &str, id: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == format!("    \"{id}\": {{"))
        .unwrap_or_else(|| panic!("class {id} not found"));
    let end = start
        + lines[start..]
            .iter()
            .position(|l| *l == "    }" || *l == "    },")
            .unwrap();
    (start, end + 1)
}

/// Edits the manifest JSON with `f` and returns the canonical text.
pub fn edit(text: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    f(&mut v);
    let mut s = serde_json::to_string_pretty(&v).unwrap();
    s.push('\n');
    s
}

/// Closes every platform gate (and its items) with an evidence link.
pub fn close_all_gates(v: &mut serde_json::Value) {
    for (_, g) in v["gates"].as_object_mut().unwrap() {
        g["status"] = "closed".into();
        g.as_object_mut().unwrap().remove("blocker");
        g["evidence"] = serde_json::json!(["https://wiki.example.invalid/closed"]);
        if let Some(items) = g.get_mut("items").and_then(|i| i.as_object_mut()) {
            for (_, i) in items {
                i["status"] = "closed".into();
                i.as_object_mut().unwrap().remove("blocker");
            }
        }
    }
}
