//! Pure stream handling for rbe-proof: no file or network I/O happens here.
//!
//! - [`delimited`]: varint length-delimited framing.

pub mod delimited;
