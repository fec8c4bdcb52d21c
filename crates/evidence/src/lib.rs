//! proof-evidence
