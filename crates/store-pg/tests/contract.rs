//! PgStore passes the same `Store` contract as the embedded store
//! (crates/store/tests/contract), on a fresh database per test.

#[path = "../../store/tests/common/mod.rs"]
mod common;
mod common_pg;
#[path = "../../store/tests/contract/mod.rs"]
mod contract;

crate::store_contract!(crate::common_pg::PgBackend::new());
