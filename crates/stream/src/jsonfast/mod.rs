//! The fast path from one proto3-JSON BEP event to its binary form: the JSON
//! is read once by a small lexer of its own ([`Lexer`]), and each field is
//! encoded as it is read, guided by a plan made once from the descriptors.
//! No JSON tree and no dynamic message are built. (serde_json's visitor
//! machinery, used here before, took about a third more time per line.)
//!
//! It handles the ordinary shape of what Bazel writes and nothing else: at
//! anything unusual (a repeated key, two members of one oneof, an enum name
//! the schema does not know, well-known types other than Timestamp and
//! Duration, a map other than string to string, a value of the wrong
//! type, anything malformed or read differently by serde_json) it gives up
//! and the caller converts the line the general, tolerant way
//! ([`super::bepfile::json_event_to_binary_general`]), which also gives the
//! warnings and errors. Like the general path, it skips fields the schema
//! does not declare (after checking they are JSON), and reads Timestamps and
//! Durations with prost-reflect's checks and prost-types' parser, and `bytes`
//! with the base64 rules prost-reflect applies. Its plan is read from the
//! descriptor set as it is (prost-types), not from a prost-reflect pool, which
//! takes milliseconds to build at start. What it does produce is byte for
//! byte what the general conversion produces:
//! fields in field-number order, defaults of fields without presence left
//! out, packed repeated scalars (tested over every fixture line, and side by
//! side on arbitrary lines by the `bep_json_paths` fuzz target). Only the
//! order of map entries differs: the general path writes them in hash order
//! (a different order each run), this one in the order of the JSON.
//!
//! Modules, in the order a line meets them: [`planner`] makes the [`plan`]
//! once; [`conv`] walks the line with the [`lexer`], writing each field as
//! it is read; [`scalar`] and [`wkt`] check and encode the values.

use std::fmt;

mod conv;
mod lexer;
mod plan;
mod planner;
mod scalar;
#[cfg(test)]
mod tests;
mod wkt;

use conv::{Conv, Ctx};
use lexer::Lexer;

/// Why the fast path gave up (never shown to users: the general path runs).
#[derive(Debug)]
pub(crate) struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not handled by the fast JSON path")
    }
}

/// Converts one JSON event; `Err` means "use the general path".
pub(crate) fn convert(json: &[u8]) -> Result<Vec<u8>, GiveUp> {
    thread_local! {
        static CTX: std::cell::RefCell<Ctx> = std::cell::RefCell::new(Ctx::default());
    }
    CTX.with(|ctx| {
        let Ok(mut ctx) = ctx.try_borrow_mut() else {
            return Err(GiveUp);
        };
        let mut out = std::mem::take(&mut ctx.out);
        out.clear();
        // (A line given up on may have left some behind.)
        ctx.chunks.clear();
        let mut conv = Conv {
            lx: Lexer {
                src: json,
                pos: 0,
                nesting: 0,
                scratch: std::mem::take(&mut ctx.scratch),
            },
            ctx: &mut ctx,
        };
        if conv.lx.peek() != Some(b'{') {
            return Err(GiveUp);
        }
        let id_set = conv.message(0, &mut out, None, true)?;
        // Nothing but whitespace after the event.
        if conv.lx.peek().is_some() {
            return Err(GiveUp);
        }
        let scratch = std::mem::take(&mut conv.lx.scratch);
        ctx.scratch = scratch;
        let bin = out.clone();
        ctx.out = out;
        // The general path insists on an "id" object.
        if !id_set {
            return Err(GiveUp);
        }
        Ok(bin)
    })
}
