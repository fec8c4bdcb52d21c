//! proof-store
