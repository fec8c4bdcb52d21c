//! proof-stream
