//! proof-artifact
