//! Per-client limits of the accept loop: open connections in all and per client address, and a
//! token bucket of requests per client address. Clients are keyed by IP address, an IPv6
//! client by its /64 (one host usually holds a whole /64). Pure bookkeeping: no I/O, no hyper.

use crate::config::LimitsConfig;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rate buckets kept before idle (full) ones are first forgotten. After a pruning pass the next
/// one waits until the table has doubled, so pruning costs amortised O(1) per request however
/// many clients stay active.
const PRUNE_ABOVE: usize = 10_000;

/// The address a limit is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                ClientKey(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
            v4 => ClientKey(v4),
        }
    }
}

/// Why a connection is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `maxconns` connections are open: close at once, spend nothing on it.
    Full,
    /// This client has `maxconnsperclient` open: answer 429 and close.
    ClientFull,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits' state, shared by the accept loop and every connection.
#[derive(Debug)]
pub struct Limits {
    maxconns: u64,
    per_client: u64,
    rate: f64,
    burst: f64,
    open: AtomicU64,
    conns: Mutex<HashMap<ClientKey, u64>>,
    buckets: Mutex<Buckets>,
}

/// The token buckets by client, and the size at which idle ones are next pruned.
#[derive(Debug)]
struct Buckets {
    by_client: HashMap<ClientKey, Bucket>,
    prune_above: usize,
    /// Pruning passes made (tests).
    prunes: u64,
}

/// An admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct ConnGuard {
    limits: Arc<Limits>,
    key: ClientKey,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
        let mut conns = self.limits.conns.lock().expect("limits poisoned");
        if let Some(n) = conns.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                conns.remove(&self.key);
            }
        }
    }
}

impl Limits {
    pub fn new(c: &LimitsConfig) -> Limits {
        Limits {
            maxconns: c.maxconns,
            per_client: c.maxconnsperclient,
            rate: c.requestspersecond,
            burst: c.effective_burst(),
            open: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            buckets: Mutex::new(Buckets {
                by_client: HashMap::new(),
                prune_above: PRUNE_ABOVE,
                prunes: 0,
            }),
        }
    }

    /// Counts a new connection from `ip`, and says whether it is refused. A refused connection
    /// still counts while its guard lives (a polite refusal takes a moment).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> (ConnGuard, Result<(), Refusal>) {
        let key = ClientKey::of(ip);
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        let guard = ConnGuard {
            limits: self.clone(),
            key,
        };
        let mut conns = self.conns.lock().expect("limits poisoned");
        let n = conns.entry(key).or_insert(0);
        *n += 1;
        let (n, full) = (*n, self.maxconns > 0 && open >= self.maxconns);
        drop(conns);
        let verdict = if full {
            Err(Refusal::Full)
        } else if self.per_client > 0 && n > self.per_client {
            Err(Refusal::ClientFull)
        } else {
            Ok(())
        };
        (guard, verdict)
    }

    /// Takes a token for one request from `ip`; when there is none, how long until there is.
    pub fn request(&self, ip: IpAddr) -> Result<(), Duration> {
        self.request_at(ClientKey::of(ip), Instant::now())
    }

    fn request_at(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("limits poisoned");
        if buckets.by_client.len() > buckets.prune_above {
            let (rate, burst) = (self.rate, self.burst);
            buckets.by_client.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            buckets.prune_above = PRUNE_ABOVE.max(buckets.by_client.len() * 2);
            buckets.prunes += 1;
        }
        let b = buckets.by_client.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Pruning passes over the rate table so far (tests).
    #[cfg(test)]
    fn prunes(&self) -> u64 {
        self.buckets.lock().expect("limits poisoned").prunes
    }

    /// Open connections (for tests and metrics).
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(f: impl FnOnce(&mut LimitsConfig)) -> Arc<Limits> {
        let mut c = LimitsConfig::default();
        f(&mut c);
        Arc::new(Limits::new(&c))
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            ClientKey::of(mapped),
            ClientKey::of("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn connections_per_client_and_in_all() {
        let l = limits(|c| {
            c.maxconns = 3;
            c.maxconnsperclient = 2;
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let ok = |ip| {
            let (g, v) = l.admit(ip);
            v.unwrap();
            g
        };
        let refused = |ip| l.admit(ip).1.unwrap_err();
        let g1 = ok(a);
        let _g2 = ok(a);
        assert_eq!(refused(a), Refusal::ClientFull);
        let _g3 = ok(b);
        assert_eq!(refused(b), Refusal::Full);
        assert_eq!(l.open(), 3);
        drop(g1);
        assert_eq!(l.open(), 2);
        let _g4 = ok(a);
    }

    #[test]
    fn token_bucket() {
        let l = limits(|c| {
            c.requestspersecond = 10.0;
            c.burst = 3;
        });
        let k = ClientKey::of("10.0.0.1".parse().unwrap());
        let other = ClientKey::of("10.0.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..3 {
            l.request_at(k, t).unwrap();
        }
        let wait = l.request_at(k, t).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        l.request_at(other, t).unwrap();
        l.request_at(k, t + Duration::from_millis(100)).unwrap();
        assert!(l.request_at(k, t + Duration::from_millis(100)).is_err());
        // Refills to the burst, not beyond.
        let later = t + Duration::from_secs(60);
        for _ in 0..3 {
            l.request_at(k, later).unwrap();
        }
        assert!(l.request_at(k, later).is_err());
    }

    #[test]
    fn pruning_is_amortised() {
        let l = limits(|c| {
            c.requestspersecond = 1.0;
            c.burst = 5;
        });
        let t = Instant::now();
        let key = |i: u32| ClientKey::of(IpAddr::V4(i.into()));
        // More active clients (buckets not full) than the pruning threshold…
        let active = PRUNE_ABOVE as u32 + 100;
        for i in 0..active {
            l.request_at(key(i), t).unwrap();
        }
        // …then as many requests again from them: one pruning pass, not one per request.
        for i in 0..active {
            l.request_at(key(i), t).unwrap();
        }
        assert_eq!(l.prunes(), 1);
        // Idle clients are still forgotten once the table has doubled.
        let later = t + Duration::from_secs(3600);
        for i in active..(3 * active) {
            l.request_at(key(i), later).unwrap();
        }
        let len = l.buckets.lock().unwrap().by_client.len();
        assert!(len < 3 * active as usize, "idle buckets kept: {len}");
        assert!(l.prunes() <= 3, "{}", l.prunes());
    }

    #[test]
    fn unlimited_by_default() {
        let l = limits(|_| {});
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10_000 {
            l.request(ip).unwrap();
        }
    }
}
