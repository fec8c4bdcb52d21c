//! `summary.md` goes into pull-request comments: every string that comes
//! from the build (a client's claim) must render as text, never as a link,
//! an image, HTML or a table break.

mod common;

use common::fixture;
use proof_artifact::{summary, Policy};

const HOSTILE: &str = "[click](https://evil.example/x) ![img](https://evil.example/p.png) <img src=x> | `tick` *em*\nline";

fn evidence() -> proof_artifact::Evidence {
    let mut b = proof_evidence::EvidenceBuilder::new();
    let bep = std::fs::read(fixture("remote-build", "bep.bin")).unwrap();
    for e in proof_stream::delimited::DelimitedReader::new(bep.as_slice()) {
        b.push_event(&e.unwrap()).unwrap();
    }
    b.finish().unwrap()
}

/// No Markdown link or image syntax, no raw HTML tag, no stray newline or
/// unescaped table pipe survives outside code spans.
fn assert_inert(md: &str) {
    for line in md.lines() {
        // Drop code spans (their content is literal).
        let mut outside = String::new();
        let mut in_code = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '`' && prev != '\\' {
                in_code = !in_code;
            } else if !in_code {
                outside.push(c);
            }
            prev = c;
        }
        assert!(!in_code, "unbalanced code span: {line}");
        // Escaped characters are literal: drop them before looking for syntax.
        let mut bare = String::new();
        let mut chars = outside.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                chars.next();
            } else {
                bare.push(c);
            }
        }
        assert!(!bare.contains("]("), "a link or image: {line}");
        assert!(!bare.contains('<'), "raw HTML: {line}");
        assert!(!bare.contains("*em*"), "emphasis: {line}");
    }
    assert!(
        !md.contains("\nline"),
        "a newline from the input split a line:\n{md}"
    );
}

#[test]
fn hostile_strings_in_the_evidence_render_as_text() {
    let mut ev = evidence();
    ev.exit_code.as_mut().unwrap().name = HOSTILE.into();
    ev.exit_code.as_mut().unwrap().code = 1;
    ev.command = HOSTILE.into();
    ev.invocation_id = HOSTILE.into();
    let md = summary::render(&ev, &Policy::default());
    assert!(
        md.contains("evil.example"),
        "the values are still shown:\n{md}"
    );
    assert_inert(&md);
}
