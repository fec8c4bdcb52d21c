//! Bounds on what one peer and one RPC may cost the server.

use super::*;

/// Bounds on what one peer and one RPC may cost the server.
///
/// Memory in flight: an RPC holds at most one group commit
/// (`batch_bytes`, plus the one message that crossed it, at most the gRPC
/// message limit) and, before its gate is ready, [`HOLD_MAX_BYTES`]; HTTP/2
/// flow control bounds what is buffered below that. A peer opens at most
/// `rpcs_per_peer` tool-event RPCs at once, a tenant at most its
/// `concurrent_streams` quota (docs/tenants.md).
#[derive(Debug, Clone)]
pub struct RpcLimits {
    /// Open PublishBuildToolEventStream RPCs per peer IP address.
    pub rpcs_per_peer: usize,
    /// An RPC that sends no first message for this long is closed.
    pub first_message_timeout: Duration,
    /// An RPC that sends nothing for this long between messages is closed
    /// (DEADLINE_EXCEEDED; Bazel resumes on a new RPC).
    pub idle_timeout: Duration,
    /// Message bytes taken into one group commit.
    pub batch_bytes: usize,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            rpcs_per_peer: 64,
            first_message_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15 * 60),
            batch_bytes: 32 << 20,
        }
    }
}

/// Open RPCs per peer address.
#[derive(Default)]
pub(super) struct Peers(pub(super) Mutex<HashMap<std::net::IpAddr, usize>>);

/// One open RPC of a peer; gives the place back when dropped.
pub(super) struct PeerPermit {
    pub(super) inner: Arc<Inner>,
    pub(super) ip: Option<std::net::IpAddr>,
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut m = self.inner.peers.0.lock().expect("peers lock");
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl Inner {
    /// A place for one more RPC of the peer at `addr`, or RESOURCE_EXHAUSTED.
    pub(super) fn peer_permit(
        self: &Arc<Self>,
        addr: Option<std::net::SocketAddr>,
    ) -> Result<PeerPermit, Status> {
        let ip = addr.map(|a| a.ip());
        if let Some(ip) = ip {
            let mut m = self.peers.0.lock().expect("peers lock");
            let n = m.entry(ip).or_default();
            if *n >= self.limits.rpcs_per_peer {
                Metrics::add(&self.metrics.stream_errors_peer_limit, 1);
                return Err(Status::resource_exhausted(format!(
                    "{} tool-event RPCs from {ip} are open, the most this server allows per peer; close finished streams or raise `proof serve --max-rpcs-per-peer`",
                    self.limits.rpcs_per_peer
                )));
            }
            *n += 1;
        }
        Ok(PeerPermit {
            inner: self.clone(),
            ip,
        })
    }
}
