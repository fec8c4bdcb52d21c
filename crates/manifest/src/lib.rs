//! proof-manifest
