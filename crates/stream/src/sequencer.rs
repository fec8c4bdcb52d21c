//! The BES sequence rules, as a pure state machine.
//!
//! Bazel numbers the events of an invocation's tool stream 1, 2, 3, ... and
//! pipelines them; every response acks the oldest unacked event. When an RPC
//! fails with a retriable status, Bazel opens a new RPC and re-sends every
//! event it holds unacked, with the same numbers. So:
//!
//! - an event at or below what is already accepted is a re-send: store
//!   nothing, ack again ([`Decision::Duplicate`]);
//! - the next number is new ([`Decision::Append`]);
//! - anything else loses or reorders data and is refused ([`Violation`]).

use std::fmt;

/// Where an invocation's stream stands, as the store knows it (plus events
/// accepted into a batch that is not committed yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Highest sequence number accepted so far (0 = none).
    pub accepted: u64,
    /// Sequence number of the ComponentStreamFinished event, once accepted.
    pub finished_at: Option<u64>,
}

/// What to do with one incoming event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New: store it, then ack it.
    Append,
    /// Already stored: ack it again, store nothing.
    Duplicate,
    /// Refuse the RPC.
    Reject(Violation),
}

/// A sequence number that cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Sequence numbers start at 1.
    Zero,
    /// Events between `expected` and `got` were never received.
    Gap { expected: u64, got: u64 },
    /// Within one RPC the numbers went down or repeated.
    Backwards { previous: u64, got: u64 },
    /// The stream already finished at `finished_at`.
    AfterFinish { finished_at: u64, got: u64 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Violation::Zero => write!(f, "sequence_number 0 is invalid: BES sequence numbers start at 1"),
            Violation::Gap { expected, got } => write!(
                f,
                "sequence gap: expected sequence_number {expected}, got {got}; events {expected}..{} were never received, so the stream cannot be completed",
                got - 1
            ),
            Violation::Backwards { previous, got } => write!(
                f,
                "sequence went backwards within one stream: {got} after {previous}; a client must send consecutive numbers"
            ),
            Violation::AfterFinish { finished_at, got } => write!(
                f,
                "event {got} arrived after the stream finished at sequence_number {finished_at}; start a new invocation instead"
            ),
        }
    }
}

/// Per-RPC state: the previous sequence number seen on this RPC.
#[derive(Debug, Default, Clone)]
pub struct RpcSequencer {
    previous: Option<u64>,
}

impl RpcSequencer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides about `seq` given the invocation's `position`. Updates the
    /// per-RPC state only for events that are not rejected.
    pub fn decide(&mut self, position: Position, seq: u64) -> Decision {
        let decision = decide(self.previous, position, seq);
        if !matches!(decision, Decision::Reject(_)) {
            self.previous = Some(seq);
        }
        decision
    }
}

fn decide(previous: Option<u64>, position: Position, seq: u64) -> Decision {
    if seq == 0 {
        return Decision::Reject(Violation::Zero);
    }
    if let Some(prev) = previous {
        if seq <= prev {
            return Decision::Reject(Violation::Backwards {
                previous: prev,
                got: seq,
            });
        }
        if seq != prev + 1 {
            return Decision::Reject(Violation::Gap {
                expected: prev + 1,
                got: seq,
            });
        }
    }
    if let Some(finished_at) = position.finished_at {
        if seq > finished_at {
            return Decision::Reject(Violation::AfterFinish {
                finished_at,
                got: seq,
            });
        }
    }
    if seq <= position.accepted {
        Decision::Duplicate
    } else if seq == position.accepted + 1 {
        Decision::Append
    } else {
        Decision::Reject(Violation::Gap {
            expected: position.accepted + 1,
            got: seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(accepted: u64) -> Position {
        Position {
            accepted,
            finished_at: None,
        }
    }

    #[test]
    fn first_rpc_in_order() {
        let mut s = RpcSequencer::new();
        assert_eq!(s.decide(at(0), 1), Decision::Append);
        assert_eq!(s.decide(at(1), 2), Decision::Append);
        assert_eq!(
            s.decide(at(2), 4),
            Decision::Reject(Violation::Gap {
                expected: 3,
                got: 4
            })
        );
    }

    #[test]
    fn retry_resends_acked_and_unacked_events() {
        // Stored 1..=5; Bazel saw acks up to 3 only and re-sends 4, 5, then 6.
        let mut s = RpcSequencer::new();
        assert_eq!(s.decide(at(5), 4), Decision::Duplicate);
        assert_eq!(s.decide(at(5), 5), Decision::Duplicate);
        assert_eq!(s.decide(at(5), 6), Decision::Append);
    }

    #[test]
    fn retry_may_not_skip_ahead() {
        let mut s = RpcSequencer::new();
        assert_eq!(
            s.decide(at(5), 8),
            Decision::Reject(Violation::Gap {
                expected: 6,
                got: 8
            })
        );
    }

    #[test]
    fn backwards_within_an_rpc_is_refused() {
        let mut s = RpcSequencer::new();
        assert_eq!(s.decide(at(5), 4), Decision::Duplicate);
        assert_eq!(s.decide(at(5), 5), Decision::Duplicate);
        assert_eq!(
            s.decide(at(5), 3),
            Decision::Reject(Violation::Backwards {
                previous: 5,
                got: 3
            })
        );
        assert_eq!(
            s.decide(at(5), 5),
            Decision::Reject(Violation::Backwards {
                previous: 5,
                got: 5
            })
        );
    }

    #[test]
    fn nothing_after_finish_but_the_finish_may_be_resent() {
        let done = Position {
            accepted: 9,
            finished_at: Some(9),
        };
        assert_eq!(RpcSequencer::new().decide(done, 9), Decision::Duplicate);
        assert_eq!(
            RpcSequencer::new().decide(done, 10),
            Decision::Reject(Violation::AfterFinish {
                finished_at: 9,
                got: 10
            })
        );
        assert_eq!(
            RpcSequencer::new().decide(done, 0),
            Decision::Reject(Violation::Zero)
        );
    }
}
