//! proof-server
