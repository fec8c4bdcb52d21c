//! Every reader of one BEP event reads the same event ([trust 4] finding 2):
//! the top-level shape (`proof_stream::probe::shape`), the probe, the tenant
//! gate's command line (`proof_tenancy::options::command_options`) and the
//! evidence (`EvidenceBuilder::push_event`, the full `BuildEvent` decode).
//! Arbitrary bytes are read as a delimited stream; each record is one event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_evidence::EvidenceBuilder;
use proof_proto::bep::{build_event::Payload, BuildEvent};
use proof_stream::delimited::DelimitedReader;
use proof_tenancy::{command_options, OptionsSource};
use prost::Message;

/// The field number of a decoded payload, as prost writes it.
fn payload_number(p: &Payload) -> u32 {
    let mut buf = Vec::new();
    p.encode(&mut buf);
    let mut rest = &buf[..];
    let key = prost::encoding::decode_varint(&mut rest).expect("prost wrote a key");
    (key >> 3) as u32
}

fn check(event: &[u8]) {
    let shape = proof_stream::probe::shape(event);
    let probed = proof_stream::probe::probe(event);
    let evidence = EvidenceBuilder::new().push_event(event);
    let options = command_options(event);
    let Ok(shape) = shape else {
        assert!(probed.is_err(), "the probe took an event shape refuses");
        assert!(evidence.is_err(), "the evidence took an event shape refuses");
        assert!(options.is_none(), "the gate read an event shape refuses");
        return;
    };
    let Ok(full) = BuildEvent::decode(event) else {
        assert!(probed.is_err() || evidence.is_err() || options.is_none());
        return;
    };
    // One payload, the same one for everybody.
    match (&full.payload, shape.payload) {
        (Some(p), Some((n, _))) => assert_eq!(payload_number(p), n),
        (Some(p), None) => panic!("shape saw no payload, prost decoded {}", payload_number(p)),
        // A payload number this schema does not know: prost skips it.
        (None, _) => {}
    }
    // The gate reads a command line exactly where the evidence would.
    match (&full.payload, &options) {
        (Some(Payload::OptionsParsed(_)), Some(o)) => {
            assert_eq!(o.source, OptionsSource::OptionsParsed)
        }
        (Some(Payload::StructuredCommandLine(cl)), Some(o)) => {
            assert_eq!(cl.command_line_label, "canonical");
            assert_eq!(o.source, OptionsSource::CanonicalCommandLine);
        }
        (Some(Payload::OptionsParsed(_)), None) => {
            panic!("the evidence reads OptionsParsed the gate did not judge")
        }
        (_, Some(o)) => panic!("the gate read {:?} from another payload", o.source),
        (_, None) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    for record in DelimitedReader::with_limit(data, 1 << 20) {
        let Ok(record) = record else { break };
        check(&record);
    }
});
