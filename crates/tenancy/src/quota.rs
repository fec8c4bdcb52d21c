//! Stream and rate quotas: a small state machine. Time is a parameter
//! (`now_ms`), so tests move it by hand.

use std::collections::{HashMap, VecDeque};

use crate::config::Tenant;
use crate::denial::{Denial, Reason};

const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Default)]
struct Usage {
    open_streams: u32,
    /// Admission times of new invocations within the last hour, oldest first.
    admitted: VecDeque<i64>,
}

/// Per-tenant counters of open streams and recently admitted invocations.
#[derive(Debug, Default)]
pub struct QuotaBook {
    usage: HashMap<String, Usage>,
}

/// Proof that a stream slot was taken; give it back with [`QuotaBook::close`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a stream slot stays taken until the ticket is closed"]
pub struct StreamTicket {
    tenant: String,
}

impl StreamTicket {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl QuotaBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a stream slot for `tenant`, and when `new_invocation`, counts one
    /// invocation at `now_ms` against the hourly limit. Nothing is counted
    /// when the answer is a denial.
    pub fn open(
        &mut self,
        tenant: &Tenant,
        new_invocation: bool,
        now_ms: i64,
    ) -> Result<StreamTicket, Denial> {
        let u = self.usage.entry(tenant.id.clone()).or_default();
        while u.admitted.front().is_some_and(|&t| t <= now_ms - HOUR_MS) {
            u.admitted.pop_front();
        }
        let q = tenant.quota;
        if u.open_streams >= q.concurrent_streams {
            return Err(Denial::new(
                Reason::ConcurrentStreamsExceeded,
                format!(
                    "tenant {} already has {} open BES streams, its quota; retry when a build finished",
                    tenant.id, u.open_streams
                ),
            )
            .with("tenant", &tenant.id)
            .with("limit", q.concurrent_streams.to_string()));
        }
        if new_invocation {
            if u.admitted.len() >= q.invocations_per_hour as usize {
                let retry_s = u
                    .admitted
                    .front()
                    .map_or(0, |&t| (t + HOUR_MS - now_ms).max(0) / 1000 + 1);
                return Err(Denial::new(
                    Reason::InvocationsPerHourExceeded,
                    format!(
                        "tenant {} started {} invocations in the last hour, its quota; the next one is admitted in {retry_s} s",
                        tenant.id,
                        u.admitted.len()
                    ),
                )
                .with("tenant", &tenant.id)
                .with("limit", q.invocations_per_hour.to_string())
                .with("retry_after_seconds", retry_s.to_string()));
            }
            u.admitted.push_back(now_ms);
        }
        u.open_streams += 1;
        Ok(StreamTicket {
            tenant: tenant.id.clone(),
        })
    }

    /// Gives a stream slot back (the RPC ended, whatever its outcome).
    pub fn close(&mut self, ticket: StreamTicket) {
        if let Some(u) = self.usage.get_mut(&ticket.tenant) {
            u.open_streams = u.open_streams.saturating_sub(1);
        }
    }

    /// Open streams of a tenant.
    pub fn open_streams(&self, tenant: &str) -> u32 {
        self.usage.get(tenant).map_or(0, |u| u.open_streams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hash_token, Tenants};

    fn tenant(streams: u32, per_hour: u32) -> Tenant {
        let f = format!(
            "[[tenant]]\nid = \"t\"\nlane = \"trusted-writer\"\ntokens_sha256 = [\"{}\"]\nbes_instance_names = [\"\"]\nremote_instance_names = [\"\"]\npools = [\"\"]\n[tenant.quota]\nconcurrent_streams = {streams}\ninvocations_per_hour = {per_hour}\n",
            hash_token("t")
        );
        Tenants::parse(&f).unwrap().tenants()[0].clone()
    }

    #[test]
    fn concurrent_streams_are_released_on_close() {
        let t = tenant(2, 100);
        let mut b = QuotaBook::new();
        let s1 = b.open(&t, true, 0).unwrap();
        let s2 = b.open(&t, false, 0).unwrap();
        assert_eq!(b.open_streams("t"), 2);
        let d = b.open(&t, true, 0).unwrap_err();
        assert_eq!(d.reason, Reason::ConcurrentStreamsExceeded);
        assert_eq!(d.metadata["limit"], "2");
        b.close(s1);
        let s3 = b.open(&t, true, 0).unwrap();
        b.close(s2);
        b.close(s3);
        assert_eq!(b.open_streams("t"), 0);
    }

    #[test]
    fn hourly_window_slides_with_now() {
        let t = tenant(100, 2);
        let mut b = QuotaBook::new();
        let a = b.open(&t, true, 1_000).unwrap();
        let c = b.open(&t, true, 2_000).unwrap();
        // A retry of an existing invocation is not a new one.
        let r = b.open(&t, false, 3_000).unwrap();
        let d = b.open(&t, true, 3_000).unwrap_err();
        assert_eq!(d.reason, Reason::InvocationsPerHourExceeded);
        // The first admission (at 1 s) leaves the window at 1 s + 1 h.
        assert_eq!(d.metadata["retry_after_seconds"], "3599");
        assert!(b.open(&t, true, 1_000 + HOUR_MS - 1).is_err());
        let e = b.open(&t, true, 1_000 + HOUR_MS).unwrap();
        assert!(b.open(&t, true, 1_000 + HOUR_MS).is_err());
        // A denial counts nothing: open streams are still 4.
        assert_eq!(b.open_streams("t"), 4);
        for s in [a, c, r, e] {
            b.close(s);
        }
        assert_eq!(b.open_streams("t"), 0);
    }
}
