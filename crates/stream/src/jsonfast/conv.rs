//! The conversion of one line ([`Conv`]): messages, fields, lists and maps
//! written as they are read, and the protobuf wire encoding they use.

use crate::delimited::encode_varint;

use super::{
    lexer::Lexer,
    plan::{FieldPlan, Ty},
    planner::plan,
    scalar::{base64, number, put_num, scalar, wire},
    GiveUp,
};

/// The most fields and oneofs a message may have on this path (seen-bits
/// kept on the stack; BEP's largest message has 40-odd fields).
const MAX_FIELDS: usize = 256;
const MAX_ONEOFS: usize = 64;

#[derive(Default)]
pub(super) struct Ctx {
    /// (field number, start, end) of each field written to the destination,
    /// for every message being written, innermost last (a stack).
    pub(super) chunks: Vec<(u32, usize, usize)>,
    /// A message's fields put back in number order.
    pub(super) sorted: Vec<u8>,
    pub(super) packed: Vec<u8>,
    /// The event being written (copied out at its exact size).
    pub(super) out: Vec<u8>,
    /// The lexer's buffer for strings with escapes or non-ASCII text.
    pub(super) scratch: Vec<u8>,
}

pub(super) const WIRE_VARINT: u32 = 0;
pub(super) const WIRE_FIXED64: u32 = 1;
pub(super) const WIRE_LEN: u32 = 2;
pub(super) const WIRE_FIXED32: u32 = 5;

pub(super) fn key(number: u32, wire: u32, out: &mut Vec<u8>) {
    encode_varint(u64::from(number << 3 | wire), out);
}

fn test_bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

/// A length-delimited field.
pub(super) fn put_len(number: u32, bytes: &[u8], dst: &mut Vec<u8>) {
    key(number, WIRE_LEN, dst);
    encode_varint(bytes.len() as u64, dst);
    dst.extend_from_slice(bytes);
}

/// One line being converted.
pub(super) struct Conv<'a, 'c> {
    pub(super) lx: Lexer<'a>,
    pub(super) ctx: &'c mut Ctx,
}

impl Conv<'_, '_> {
    /// One message, a JSON object (next), written to `dst` after `tag` and
    /// its length when it is a field of another message. At the top level
    /// (`need_id`), yields whether field 1 ("id") was set.
    pub(super) fn message(
        &mut self,
        msg: usize,
        dst: &mut Vec<u8>,
        tag: Option<u32>,
        need_id: bool,
    ) -> Result<bool, GiveUp> {
        self.lx.open(b'{')?;
        let plan = plan();
        let mp = &plan.msgs[msg];
        if mp.fields.len() > MAX_FIELDS || mp.oneofs > MAX_ONEOFS {
            return Err(GiveUp);
        }
        let mut seen = [0u64; MAX_FIELDS / 64];
        let mut oneofs = [0u64; MAX_ONEOFS / 64];
        let chunks_from = self.ctx.chunks.len();
        let mut in_order = true;
        let mut last = 0;
        // The message is written where it goes: its tag, one byte for its length (widened
        // afterwards if the body needs more), its body.
        let len_at = tag.map(|tag| {
            key(tag, WIRE_LEN, dst);
            dst.push(0);
            dst.len() - 1
        });
        let body_start = dst.len();
        let mut id_set = false;
        if !self.lx.empty(b'}') {
            loop {
                if self.lx.peek() != Some(b'"') {
                    return Err(GiveUp);
                }
                let name = self.lx.string()?;
                let Some(i) = mp.by_key.get(name) else {
                    // A field our schema does not declare: skipped, as the
                    // general path skips it.
                    self.lx.eat(b':')?;
                    self.lx.skip()?;
                    if self.lx.next_or_close(b'}')? {
                        break;
                    }
                    continue;
                };
                self.lx.eat(b':')?;
                if test_bit(&seen, i) {
                    return Err(GiveUp);
                }
                set_bit(&mut seen, i);
                let f = &mp.fields[i];
                let start = dst.len();
                let set = self.field(f, dst)?;
                if set {
                    if let Some(o) = f.oneof {
                        if test_bit(&oneofs, o) {
                            return Err(GiveUp);
                        }
                        set_bit(&mut oneofs, o);
                    }
                    if need_id && f.number == 1 {
                        id_set = true;
                    }
                }
                let end = dst.len();
                if end > start {
                    in_order &= f.number > last;
                    last = f.number;
                    self.ctx.chunks.push((f.number, start, end));
                }
                if self.lx.next_or_close(b'}')? {
                    break;
                }
            }
        }
        // Fields in number order, as protobuf encoders write them.
        if !in_order {
            let chunks = &mut self.ctx.chunks[chunks_from..];
            chunks.sort_by_key(|c| c.0);
            let sorted = &mut self.ctx.sorted;
            sorted.clear();
            for &(_, s, e) in &*chunks {
                sorted.extend_from_slice(&dst[s..e]);
            }
            dst.truncate(body_start);
            dst.extend_from_slice(sorted);
        }
        self.ctx.chunks.truncate(chunks_from);
        if let Some(at) = len_at {
            let len = dst.len() - body_start;
            let n = prost::encoding::encoded_len_varint(len as u64);
            if n > 1 {
                let end = dst.len();
                dst.resize(end + n - 1, 0);
                dst.copy_within(body_start..end, body_start + n - 1);
            }
            let mut slot = &mut dst[at..at + n];
            prost::encoding::encode_varint(len as u64, &mut slot);
        }
        Ok(id_set)
    }

    /// The value of one field (next), encoded into `dst`; yields whether it
    /// is set (false for `null`).
    pub(super) fn field(&mut self, f: &FieldPlan, dst: &mut Vec<u8>) -> Result<bool, GiveUp> {
        match self.lx.peek().ok_or(GiveUp)? {
            b'n' => {
                self.lx.literal(b"null")?;
                match f.ty {
                    Ty::Unsupported => Err(GiveUp),
                    _ => Ok(false),
                }
            }
            b'[' => self.list(f, dst).map(|()| true),
            b'{' => match f.ty {
                Ty::Message(m) if !f.repeated => {
                    self.message(m, dst, Some(f.number), false)?;
                    Ok(true)
                }
                Ty::StringMap => self.string_map(f, dst).map(|()| true),
                _ => Err(GiveUp),
            },
            _ => {
                let s = self.lx.scalar()?;
                scalar(f, s, dst).map(|()| true)
            }
        }
    }

    /// A repeated field's JSON array (next).
    pub(super) fn list(&mut self, f: &FieldPlan, dst: &mut Vec<u8>) -> Result<(), GiveUp> {
        if !f.repeated
            || matches!(
                f.ty,
                Ty::Unsupported | Ty::StringMap | Ty::Timestamp | Ty::Duration
            )
        {
            return Err(GiveUp);
        }
        self.lx.open(b'[')?;
        if self.lx.empty(b']') {
            return Ok(());
        }
        if f.packed {
            let mut packed = std::mem::take(&mut self.ctx.packed);
            packed.clear();
            loop {
                let (n, _) = number(f.ty, &self.lx.scalar()?).ok_or(GiveUp)?;
                put_num(&n, &mut packed);
                if self.lx.next_or_close(b']')? {
                    break;
                }
            }
            key(f.number, WIRE_LEN, dst);
            encode_varint(packed.len() as u64, dst);
            dst.extend_from_slice(&packed);
            self.ctx.packed = packed;
            return Ok(());
        }
        loop {
            match f.ty {
                Ty::Message(m) => {
                    if self.lx.peek() != Some(b'{') {
                        return Err(GiveUp);
                    }
                    self.message(m, dst, Some(f.number), false)?;
                }
                Ty::String => {
                    if self.lx.peek() != Some(b'"') {
                        return Err(GiveUp);
                    }
                    let v = self.lx.string()?;
                    put_len(f.number, v, dst);
                }
                Ty::Bytes => {
                    if self.lx.peek() != Some(b'"') {
                        return Err(GiveUp);
                    }
                    let v = base64(self.lx.string()?)?;
                    put_len(f.number, &v, dst);
                }
                ty => {
                    let (n, _) = number(ty, &self.lx.scalar()?).ok_or(GiveUp)?;
                    key(f.number, wire(&n), dst);
                    put_num(&n, dst);
                }
            }
            if self.lx.next_or_close(b']')? {
                return Ok(());
            }
        }
    }

    /// A `map<string, string>` field's JSON object (next).
    pub(super) fn string_map(&mut self, f: &FieldPlan, dst: &mut Vec<u8>) -> Result<(), GiveUp> {
        self.lx.open(b'{')?;
        if self.lx.empty(b'}') {
            return Ok(());
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        loop {
            if self.lx.peek() != Some(b'"') {
                return Err(GiveUp);
            }
            let k = self.lx.string()?.to_owned();
            // A repeated key: the general path keeps the last one.
            if keys.contains(&k) {
                return Err(GiveUp);
            }
            self.lx.eat(b':')?;
            if self.lx.peek() != Some(b'"') {
                return Err(GiveUp);
            }
            let v = self.lx.string()?;
            let len = |s: &[u8]| {
                if s.is_empty() {
                    0
                } else {
                    1 + prost::encoding::encoded_len_varint(s.len() as u64) + s.len()
                }
            };
            key(f.number, WIRE_LEN, dst);
            encode_varint((len(&k) + len(v)) as u64, dst);
            for (n, s) in [(1, &k[..]), (2, v)] {
                if !s.is_empty() {
                    put_len(n, s, dst);
                }
            }
            keys.push(k);
            if self.lx.next_or_close(b'}')? {
                return Ok(());
            }
        }
    }
}

/// A message's length and body.
pub(super) fn put_message(m: &impl prost::Message, dst: &mut Vec<u8>) {
    encode_varint(m.encoded_len() as u64, dst);
    m.encode(dst).expect("a Vec grows");
}
