//! `ClientLimits`: how many connections the server holds, and how many
//! connections and subscriber streams one client address may hold.
//!
//! A connection is admitted at accept, before a byte is read (a refused one
//! is closed at once: cheaper than reading a head, and an `EventSource`
//! treats a closed connection as a reason to come back, not as final). The
//! total keeps file descriptors for publishers and probes; the per-address
//! limits keep one address from taking every slot, whatever the protocol:
//! HTTP/2 streams count as streams like HTTP/1 ones.
//!
//! Addresses in `address_limits_exempt` (loopback and private networks by
//! default) count only in the total: behind a proxy or a load balancer every
//! client arrives from a few such addresses. IPv6 clients are counted per
//! /64, since one host usually holds a whole /64.
//!
//! Past `max_connections`, `PROBE_SLOTS` more connections are still
//! admitted, to be answered only `/healthz`, `/readyz` and `/metrics` (every
//! other request gets a temporary refusal): an orchestrator's probe opens a
//! new connection each time, and a gateway full of subscribers is healthy,
//! not dead.
//!
//! `max_connections` is kept below the open-file limit, with room for the
//! probe slots and for the descriptors the server needs besides client
//! connections (the listener, Redis, forward authorization, TLS files): a
//! full server refuses at accept instead of running out of descriptors,
//! where `accept` itself fails and nobody can be answered.
//!
//! The counts live here and nowhere else: a permit is the only way to hold a
//! slot, and dropping it gives the slot back.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use ipnet::IpNet;

use crate::config::Config;

/// Connections admitted past `max_connections` for health checks only.
pub const PROBE_SLOTS: usize = 32;

/// Descriptors kept for everything but client connections, out of
/// `open_files`.
fn reserved_descriptors(open_files: u64) -> u64 {
    (open_files / 32).max(64) + PROBE_SLOTS as u64
}

/// `configured` lowered, if need be, to what `open_files` descriptors can
/// hold beside the reserve.
pub fn max_connections_within(configured: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(reserved_descriptors(open_files));
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

pub struct ClientLimits {
    max_connections: usize,
    /// 0: no limit.
    max_connections_per_address: usize,
    /// 0: no limit.
    max_streams_per_address: usize,
    exempt: Vec<IpNet>,
    n_connections: AtomicUsize,
    /// Only addresses holding something, and only those not exempt.
    by_address: DashMap<IpAddr, Held>,
}

/// What one address holds.
#[derive(Debug, Default)]
struct Held {
    connections: usize,
    streams: usize,
}

/// Why a connection was closed at accept
/// (`ssegate_connections_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    MaxConnections,
    MaxConnectionsPerAddress,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 2] = [
        ConnectionRefusal::MaxConnections,
        ConnectionRefusal::MaxConnectionsPerAddress,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::MaxConnections => "max_connections",
            ConnectionRefusal::MaxConnectionsPerAddress => "max_connections_per_address",
        }
    }
}

/// A subscriber stream refused because its address holds
/// `max_streams_per_address` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimitReached {
    pub max: usize,
}

/// One admitted connection's slot; given back on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ClientLimits>,
    /// The counted address; `None` when exempt.
    counted: Option<IpAddr>,
    /// Admitted past `max_connections`, into a probe slot.
    probes_only: bool,
}

impl ConnectionPermit {
    /// Whether this connection may only be answered health checks and
    /// metrics (it holds one of the `PROBE_SLOTS`).
    pub fn probes_only(&self) -> bool {
        self.probes_only
    }
}

/// One subscriber stream's slot under its address; given back on drop.
#[derive(Debug)]
pub struct StreamPermit {
    limits: Arc<ClientLimits>,
    counted: Option<IpAddr>,
}

impl std::fmt::Debug for ClientLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimits")
            .field("n_connections", &self.n_connections)
            .field("n_addresses", &self.by_address.len())
            .finish_non_exhaustive()
    }
}

impl ClientLimits {
    pub fn new(config: &Config) -> Arc<ClientLimits> {
        let open_files =
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft);
        let max_connections = max_connections_within(config.max_connections, open_files);
        Arc::new(ClientLimits {
            max_connections,
            max_connections_per_address: config.max_connections_per_address,
            max_streams_per_address: config.max_streams_per_address,
            exempt: config.address_limits_exempt.clone(),
            n_connections: AtomicUsize::new(0),
            by_address: DashMap::new(),
        })
    }

    /// Admits a connection from `client` (past `max_connections`, into a
    /// probe slot while one is free), or says which limit is full.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<ConnectionPermit, ConnectionRefusal> {
        let before = self.n_connections.fetch_add(1, Ordering::AcqRel);
        // From here on the permit gives the total back, whatever happens.
        let mut permit = ConnectionPermit {
            limits: Arc::clone(self),
            counted: None,
            probes_only: before >= self.max_connections,
        };
        if before >= self.max_connections.saturating_add(PROBE_SLOTS) {
            return Err(ConnectionRefusal::MaxConnections);
        }
        let Some(key) = self.counted_key(client, self.max_connections_per_address) else {
            return Ok(permit);
        };
        let mut held = self.by_address.entry(key).or_default();
        if held.connections >= self.max_connections_per_address {
            drop(held);
            self.give_back(key, |_| {});
            return Err(ConnectionRefusal::MaxConnectionsPerAddress);
        }
        held.connections += 1;
        permit.counted = Some(key);
        Ok(permit)
    }

    /// Takes a stream slot for `client` (`None`: not a network client).
    pub fn open_stream(
        self: &Arc<Self>,
        client: Option<IpAddr>,
    ) -> Result<StreamPermit, StreamLimitReached> {
        let mut permit = StreamPermit {
            limits: Arc::clone(self),
            counted: None,
        };
        let Some(key) = client.and_then(|ip| self.counted_key(ip, self.max_streams_per_address))
        else {
            return Ok(permit);
        };
        let mut held = self.by_address.entry(key).or_default();
        if held.streams >= self.max_streams_per_address {
            drop(held);
            self.give_back(key, |_| {});
            return Err(StreamLimitReached {
                max: self.max_streams_per_address,
            });
        }
        held.streams += 1;
        permit.counted = Some(key);
        Ok(permit)
    }

    /// The `max_connections` in force (lowered to fit the open-file limit,
    /// if it had to be).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Connections held now.
    #[cfg(test)]
    fn n_connections(&self) -> usize {
        self.n_connections.load(Ordering::Acquire)
    }

    /// The key `client` is counted under for a limit of `max`, or `None`
    /// when that limit is off or the address exempt.
    fn counted_key(&self, client: IpAddr, max: usize) -> Option<IpAddr> {
        let client = client.to_canonical();
        if max == 0 || self.exempt.iter().any(|net| net.contains(&client)) {
            return None;
        }
        Some(match client {
            IpAddr::V4(_) => client,
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        })
    }

    /// Applies `take` to `key`'s counts, and forgets the address once it
    /// holds nothing. (A refusal gives back nothing: `or_default` may have
    /// made the entry just for it.)
    fn give_back(&self, key: IpAddr, take: impl Fn(&mut Held)) {
        if let Entry::Occupied(mut entry) = self.by_address.entry(key) {
            take(entry.get_mut());
            if entry.get().connections == 0 && entry.get().streams == 0 {
                entry.remove();
            }
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.n_connections.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.counted {
            self.limits.give_back(key, |held| held.connections -= 1);
        }
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some(key) = self.counted {
            self.limits.give_back(key, |held| held.streams -= 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: usize, exempt: &str) -> Arc<ClientLimits> {
        let config = Config {
            max_connections: 5,
            max_connections_per_address: per_address,
            max_streams_per_address: per_address,
            address_limits_exempt: exempt
                .split(',')
                .filter(|net| !net.is_empty())
                .map(|net| net.parse().expect("network"))
                .collect(),
            ..Config::default()
        };
        ClientLimits::new(&config)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn the_total_and_each_address_are_limited_and_given_back() {
        let limits = limits(2, "");
        let a1 = limits.admit(ip("192.0.2.1")).expect("first");
        let _a2 = limits.admit(ip("192.0.2.1")).expect("second");
        assert_eq!(
            limits.admit(ip("192.0.2.1")).err(),
            Some(ConnectionRefusal::MaxConnectionsPerAddress)
        );
        let _b = limits.admit(ip("192.0.2.2")).expect("another address");
        let _c = limits.admit(ip("192.0.2.3")).expect("fourth");
        let d = limits.admit(ip("192.0.2.4")).expect("fifth");
        assert!(!d.probes_only());
        let probes: Vec<_> = (0..PROBE_SLOTS)
            .map(|i| {
                let client = ip(&format!("198.51.100.{i}"));
                limits.admit(client).expect("a probe slot")
            })
            .collect();
        assert!(probes.iter().all(ConnectionPermit::probes_only));
        assert_eq!(
            limits.admit(ip("192.0.2.5")).err(),
            Some(ConnectionRefusal::MaxConnections)
        );
        drop(probes);
        drop(a1);
        assert_eq!(limits.n_connections(), 4);
        let a3 = limits.admit(ip("192.0.2.1")).expect("a slot freed");
        assert!(!a3.probes_only());
    }

    #[test]
    fn max_connections_leaves_descriptors_for_the_rest() {
        assert_eq!(max_connections_within(110_000, 1 << 20), 110_000);
        // 1024 open files: 64 reserved, and the probe slots.
        assert_eq!(max_connections_within(110_000, 1024), 1024 - 64 - 32);
        assert_eq!(max_connections_within(500, 1024), 500);
        // A thirty-second of a large limit, for forward-authorization
        // connections and the like.
        assert_eq!(
            max_connections_within(usize::MAX, 65_536),
            65_536 - 2048 - 32
        );
        assert_eq!(max_connections_within(100, 50), 1);
    }

    #[test]
    fn streams_count_per_address_apart_from_connections() {
        let limits = limits(2, "");
        let _conn = limits.admit(ip("192.0.2.1")).expect("connection");
        let s1 = limits.open_stream(Some(ip("192.0.2.1"))).expect("first");
        let _s2 = limits.open_stream(Some(ip("192.0.2.1"))).expect("second");
        assert_eq!(
            limits.open_stream(Some(ip("192.0.2.1"))).err(),
            Some(StreamLimitReached { max: 2 })
        );
        drop(s1);
        let _s3 = limits.open_stream(Some(ip("192.0.2.1"))).expect("freed");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limits = limits(1, "");
        let _a = limits.admit(ip("2001:db8:1:2::1")).expect("first");
        assert!(
            limits.admit(ip("2001:db8:1:2:ffff::9")).is_err(),
            "same /64"
        );
        let _b = limits.admit(ip("2001:db8:1:3::1")).expect("another /64");
        let _c = limits.admit(ip("192.0.2.1")).expect("v4");
        assert!(limits.admit(ip("::ffff:192.0.2.1")).is_err(), "the same v4");
    }

    #[test]
    fn exempt_addresses_count_only_in_the_total() {
        let limits = limits(1, "127.0.0.0/8,::1/128,10.0.0.0/8");
        let held: Vec<_> = (0..5)
            .map(|_| limits.admit(ip("10.1.2.3")).expect("exempt"))
            .collect();
        assert!(
            limits
                .admit(ip("127.0.0.1"))
                .expect("a probe slot")
                .probes_only()
        );
        drop(held);
        assert!(limits.by_address.is_empty());
        let _streams: Vec<_> = (0..3)
            .map(|_| limits.open_stream(Some(ip("::1"))).expect("exempt"))
            .collect();
    }

    #[test]
    fn nothing_is_kept_for_an_address_that_holds_nothing() {
        let limits = limits(1, "");
        let conn = limits.admit(ip("192.0.2.1")).expect("connection");
        let stream = limits.open_stream(Some(ip("192.0.2.1"))).expect("stream");
        assert!(limits.admit(ip("192.0.2.1")).is_err());
        drop(conn);
        assert_eq!(limits.by_address.len(), 1, "the stream still counts");
        drop(stream);
        assert!(limits.by_address.is_empty());
        assert_eq!(limits.n_connections(), 0);
    }

    #[test]
    fn zero_is_no_limit() {
        let limits = limits(0, "");
        let _held: Vec<_> = (0..5)
            .map(|_| limits.admit(ip("192.0.2.1")).expect("no per-address limit"))
            .collect();
        assert!(limits.by_address.is_empty());
    }
}
