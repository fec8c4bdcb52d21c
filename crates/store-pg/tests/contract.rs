//! PgStore passes the same `Store` contract as the embedded store
//! (`proof_testkit::contract`), on a fresh database per test.

proof_testkit::store_contract!(proof_testkit::pg::PgBackend::new());
