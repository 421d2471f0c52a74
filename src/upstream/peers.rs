//! The other replicas of a mirror (`proxy.peers`): who they are (a static list, and/or the
//! A/AAAA records of a DNS name resolved every `refresh`), whether each is up (a `GET /v2/`
//! probe every `probeinterval`; a failed probe or forward marks a peer down, a probe answered
//! marks it up again), which one is this replica (`self`, or the one whose probe answers with
//! our instance id), and the owner of a key by rendezvous (highest random weight) hashing
//! over the live replicas, this one included.
//!
//! A peer is reached as an upstream of its own ([`UpstreamClient`] with
//! [`ClientOptions::peer`] set), so every byte between replicas goes through this module's
//! parent. This module does not decide what is forwarded (that is `mirror/`), and never
//! forwards a request that came from a peer: the caller says so.

use super::{ClientOptions, UpstreamClient, UpstreamError};
use crate::config::Secret;
use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Marks a request sent by a peer replica; its value is the sender's instance id. The
/// receiver serves it from its own cache or upstream and never forwards it again.
pub const PEER_HEADER: &str = "stevedore-peer";
/// Every answer of a replica with peers carries its instance id, so a replica finds itself in
/// the peer list.
pub const INSTANCE_HEADER: &str = "stevedore-instance";

/// How the peers are found and reached.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// `host:port` of every replica, this one included.
    pub static_peers: Vec<String>,
    /// A DNS name whose addresses are replicas, each on `port`.
    pub dns: Option<String>,
    pub port: u16,
    /// This replica's address as the peers name it, if configured.
    pub self_addr: Option<String>,
    pub refresh: Duration,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// For requests to peers: timeouts, no breaker (liveness is ours to track).
    pub client: ClientOptions,
    pub credentials: Option<(String, Secret)>,
}

/// Who owns a key.
#[derive(Clone)]
pub enum Owner {
    /// This replica: ask the upstream.
    Me,
    /// A live peer: ask it.
    Peer(Peer),
}

/// A live peer and the client that reaches it.
#[derive(Clone)]
pub struct Peer {
    pub addr: String,
    pub client: Arc<UpstreamClient>,
}

struct Member {
    client: Arc<UpstreamClient>,
    up: bool,
    /// This replica itself (found by its instance id, or configured).
    me: bool,
    since: Instant,
    last_error: Option<String>,
    /// From the last DNS answer (else from the static list).
    from_dns: bool,
}

/// The replicas, their state, and rendezvous hashing over them.
pub struct Peers {
    instance: String,
    opts: PeerOptions,
    metrics: Arc<Metrics>,
    members: RwLock<BTreeMap<String, Member>>,
}

impl Peers {
    pub fn new(opts: PeerOptions, metrics: Arc<Metrics>) -> Result<Arc<Peers>, UpstreamError> {
        let peers = Arc::new(Peers {
            instance: uuid::Uuid::new_v4().to_string(),
            opts,
            metrics,
            members: RwLock::new(BTreeMap::new()),
        });
        let addrs = peers.opts.static_peers.clone();
        peers.merge(addrs, false)?;
        Ok(peers)
    }

    /// This process's instance id (the [`INSTANCE_HEADER`] of its answers).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The owner of `key` among the live replicas (this one included when it knows its own
    /// address), skipping `except` (peers that just failed this request).
    pub fn owner(&self, key: &str, except: &[String]) -> Owner {
        let members = self.members.read().expect("peers poisoned");
        let me = self.my_addr(&members);
        let mut best: Option<(u64, Option<&String>)> = me.as_ref().map(|a| (score(a, key), None));
        for (addr, m) in members.iter() {
            if m.me || !m.up || except.contains(addr) {
                continue;
            }
            let s = score(addr, key);
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, Some(addr)));
            }
        }
        match best {
            Some((_, Some(addr))) => Owner::Peer(Peer {
                addr: addr.clone(),
                client: members[addr].client.clone(),
            }),
            _ => Owner::Me,
        }
    }

    /// A forward to `addr` failed as a dead replica fails (no connection, no answer, a body
    /// cut short): it is marked down until a probe is answered.
    pub fn mark_down(&self, addr: &str, why: &UpstreamError) {
        let mut members = self.members.write().expect("peers poisoned");
        if let Some(m) = members.get_mut(addr)
            && m.up
        {
            m.up = false;
            m.since = Instant::now();
            m.last_error = Some(why.to_string());
            tracing::warn!(peer = addr, error = %why, "peer marked down after a failed forward");
        }
        drop(members);
        self.gauge();
    }

    /// Probes and (with `dns`) resolves until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let work = async {
            let mut resolved: Option<Instant> = None;
            loop {
                if let Some(name) = &self.opts.dns
                    && resolved.is_none_or(|t| t.elapsed() >= self.opts.refresh)
                {
                    resolved = Some(Instant::now());
                    self.resolve(name).await;
                }
                self.probe_all().await;
                tokio::time::sleep(self.opts.probe_interval).await;
            }
        };
        tokio::select! {
            () = work => {},
            () = stop => {},
        }
    }

    /// The debug view: this replica and every member with its state, and the owner of `key`
    /// (`"self"` or a peer's address) when asked.
    pub fn view(&self, key: Option<&str>) -> serde_json::Value {
        let owner = key.map(|k| match self.owner(k, &[]) {
            Owner::Me => "self".to_owned(),
            Owner::Peer(p) => p.addr,
        });
        let members = self.members.read().expect("peers poisoned");
        let list: Vec<_> = members
            .iter()
            .map(|(addr, m)| {
                serde_json::json!({
                    "addr": addr,
                    "self": m.me,
                    "up": m.up || m.me,
                    "since_seconds": m.since.elapsed().as_secs(),
                    "source": if m.from_dns { "dns" } else { "static" },
                    "last_error": m.last_error,
                })
            })
            .collect();
        serde_json::json!({
            "instance": self.instance,
            "self": self.my_addr(&members),
            "dns": self.opts.dns,
            "members": list,
            "owner": owner,
        })
    }

    fn my_addr(&self, members: &BTreeMap<String, Member>) -> Option<String> {
        self.opts
            .self_addr
            .clone()
            .or_else(|| members.iter().find(|(_, m)| m.me).map(|(a, _)| a.clone()))
    }

    /// Adds `addrs` as members (down until probed); with `dns`, the DNS members not in
    /// `addrs` leave.
    fn merge(&self, addrs: Vec<String>, dns: bool) -> Result<(), UpstreamError> {
        let mut members = self.members.write().expect("peers poisoned");
        if dns {
            members.retain(|a, m| !m.from_dns || addrs.contains(a));
        }
        for addr in addrs {
            if members.contains_key(&addr) {
                continue;
            }
            let opts = ClientOptions {
                peer: Some(self.instance.clone()),
                ns: None,
                ..self.opts.client.clone()
            };
            let client = UpstreamClient::new(
                &format!("peer:{addr}"),
                &format!("http://{addr}"),
                self.opts.credentials.clone(),
                opts,
                self.metrics.clone(),
            )?;
            let me = self.opts.self_addr.as_deref() == Some(addr.as_str());
            members.insert(
                addr,
                Member {
                    client: Arc::new(client),
                    up: false,
                    me,
                    since: Instant::now(),
                    last_error: None,
                    from_dns: dns,
                },
            );
        }
        drop(members);
        self.gauge();
        Ok(())
    }

    async fn resolve(&self, name: &str) {
        match tokio::net::lookup_host((name, self.opts.port)).await {
            Ok(found) => {
                let mut addrs: Vec<String> = found.map(|a| a.to_string()).collect();
                addrs.sort();
                addrs.dedup();
                tracing::debug!(dns = name, peers = addrs.len(), "peers resolved");
                if let Err(e) = self.merge(addrs, true) {
                    tracing::warn!(dns = name, error = %e, "peer address unusable");
                }
            }
            // The last answer stands: a DNS hiccup does not empty the fleet.
            Err(e) => tracing::warn!(dns = name, error = %e, "resolving peers failed"),
        }
    }

    async fn probe_all(&self) {
        let targets: Vec<(String, Arc<UpstreamClient>)> = self
            .members
            .read()
            .expect("peers poisoned")
            .iter()
            .filter(|(_, m)| !m.me)
            .map(|(a, m)| (a.clone(), m.client.clone()))
            .collect();
        let probes = targets.into_iter().map(|(addr, client)| async move {
            let answer = tokio::time::timeout(self.opts.probe_timeout, client.probe())
                .await
                .unwrap_or(Err(UpstreamError::Timeout("probe")));
            (addr, answer)
        });
        for (addr, answer) in futures::future::join_all(probes).await {
            self.note_probe(&addr, answer);
        }
        self.gauge();
    }

    fn note_probe(&self, addr: &str, answer: Result<Option<String>, UpstreamError>) {
        let mut members = self.members.write().expect("peers poisoned");
        let Some(m) = members.get_mut(addr) else {
            return;
        };
        match answer {
            Ok(Some(id)) if id == self.instance => {
                if !m.me {
                    tracing::info!(peer = addr, "found this replica in the peer list");
                }
                m.me = true;
                m.up = false;
            }
            Ok(_) => {
                if !m.up {
                    tracing::info!(peer = addr, "peer up");
                    m.since = Instant::now();
                }
                m.up = true;
                m.last_error = None;
            }
            Err(e) => {
                if m.up {
                    tracing::warn!(peer = addr, error = %e, "peer down: probe failed");
                    m.since = Instant::now();
                }
                m.up = false;
                m.last_error = Some(e.to_string());
            }
        }
    }

    fn gauge(&self) {
        let members = self.members.read().expect("peers poisoned");
        let others = members.values().filter(|m| !m.me);
        let (up, down) = others.fold(
            (0, 0),
            |(u, d), m| if m.up { (u + 1, d) } else { (u, d + 1) },
        );
        self.metrics.peers.with_label_values(&["up"]).set(up);
        self.metrics.peers.with_label_values(&["down"]).set(down);
    }
}

/// The rendezvous weight of `key` on the replica at `addr`: FNV-1a over both, then a
/// SplitMix64 finaliser so that close addresses get unrelated weights. Stable across builds
/// and platforms (every replica must compute the same owner).
fn score(addr: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.bytes().chain([0u8]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::score;

    fn owner<'a>(addrs: &[&'a str], key: &str) -> &'a str {
        addrs.iter().max_by_key(|a| score(a, key)).unwrap()
    }

    #[test]
    fn owners_spread_and_move_minimally() {
        let all = ["10.0.0.1:5000", "10.0.0.2:5000", "10.0.0.3:5000"];
        let keys: Vec<String> = (0..3000).map(|i| format!("sha256:{i:064x}")).collect();
        let mut counts = [0usize; 3];
        for k in &keys {
            let o = owner(&all, k);
            counts[all.iter().position(|a| *a == o).unwrap()] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
        // Removing one replica moves only the keys it owned.
        let two = ["10.0.0.1:5000", "10.0.0.3:5000"];
        for k in &keys {
            let before = owner(&all, k);
            if before != "10.0.0.2:5000" {
                assert_eq!(owner(&two, k), before, "{k} moved");
            }
        }
    }

    #[test]
    fn weights_are_stable() {
        // Replicas of different builds must agree: the weight is a fixed function.
        assert_eq!(score("a:1", "k"), score("a:1", "k"));
        assert_ne!(score("a:1", "k"), score("a:2", "k"));
        assert_ne!(score("a:1", "k1"), score("a:1", "k2"));
    }
}
