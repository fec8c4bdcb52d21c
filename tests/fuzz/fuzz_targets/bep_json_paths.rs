//! Arbitrary lines through both JSON conversions: the fast path (which gives
//! up on anything unusual) and the general, tolerant one must agree on every
//! line: the same refusal, or the same event and the same warnings. Map
//! entries may come in another order (the general path writes them in hash
//! order), so unequal bytes are compared as decoded events. And the import's
//! summary reads each converted event from its outline as a full decode would
//! (`SummaryBuilder::push_converted` against `push_probed`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_stream::bepfile::{json_event_to_binary, json_event_to_binary_general};
use proof_stream::summary::SummaryBuilder;

fn same_summary(event: &[u8]) {
    let (mut outlined, mut decoded) = (SummaryBuilder::new(), SummaryBuilder::new());
    match (outlined.push_converted(event), decoded.push_probed(event)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "probes differ"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("the outline and the decode disagree: {a:?} vs {b:?}"),
    }
    assert_eq!(outlined.finish(), decoded.finish(), "summaries differ");
}

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let fast = json_event_to_binary(line);
        let general = json_event_to_binary_general(line);
        match (fast, general) {
            (Err(a), Err(b)) => assert_eq!(a, b),
            (Ok((a, wa)), Ok((b, wb))) => {
                assert_eq!(wa, wb, "warnings differ");
                same_summary(&a);
                same_summary(&b);
                if a != b {
                    let a = <proof_proto::bep::BuildEvent as prost::Message>::decode(&a[..]);
                    let b = <proof_proto::bep::BuildEvent as prost::Message>::decode(&b[..]);
                    assert_eq!(a.expect("fast event decodes"), b.expect("general event decodes"));
                }
            }
            (a, b) => panic!("the two paths disagree: {a:?} vs {b:?}"),
        }
    }
});
