//! How long a test waits: one bound per kind of wait, so a hung server fails a test
//! instead of hanging the suite.

use std::time::Duration;

/// Upper bound for a whole test body that streams several invocations
/// (tests/tests/bes_faults.rs).
pub const TEST_BODY: Duration = Duration::from_secs(240);

/// Upper bound for one scenario: one server, a few streams (tests/tests/tenancy_server.rs).
pub const SCENARIO: Duration = Duration::from_secs(120);

/// How long a test waits for the in-process server to stop once told to.
pub const STOP: Duration = Duration::from_secs(10);
