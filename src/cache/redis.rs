//! The Redis tier of the layer-info cache (`storage.cache.blobdescriptor: redis`), in
//! distribution's key layout so that one Redis means the same thing to both:
//!
//! * `blobs::<digest>`: a hash with `digest`, `size` and `mediatype`;
//! * `repository::<name>::blobs`: the set of digests the repository holds;
//! * `repository::<name>::blobs::<digest>`: a hash with the repository's `mediatype`.
//!
//! A repository holds a blob when the digest is in its set *and* `blobs::<digest>` has a
//! size. Forgetting a blob deletes its `blobs::` hash, which hides it from every repository.
//!
//! Redis is an optimisation, never a dependency: every operation has a deadline, and after a
//! failure Redis is left alone for a second (requests then use the local index) before the
//! next operation tries again; the connection manager reconnects on its own. Forgets that
//! could not reach Redis are kept (up to [`MAX_PENDING`]) and replayed before the next lookup
//! or insert that can, so an outage never leaves Redis vouching for a link deleted meanwhile. This module
//! owns the connection and nothing else: it must not decide what a hit means locally.

use crate::config::RedisConfig;
use crate::oci::{Digest, RepoName};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Redis is left alone after a failed operation.
const BACKOFF: Duration = Duration::from_secs(1);

/// Forgets kept while Redis is unreachable; past this, the oldest are dropped (logged).
const MAX_PENDING: usize = 100_000;

/// A forget that has yet to reach Redis.
enum Forget {
    Link(RepoName, Digest),
    Blob(Digest),
}

/// What distribution records for a blob whose media type it was not told.
const OCTET_STREAM: &str = "application/octet-stream";

pub struct RedisLayerInfo {
    conn: ConnectionManager,
    /// Deadline of one operation (connect + command).
    deadline: Duration,
    addr: String,
    /// Milliseconds since `epoch` before which Redis is not tried.
    quiet_until: AtomicU64,
    down: AtomicBool,
    epoch: Instant,
    pending: std::sync::Mutex<std::collections::VecDeque<Forget>>,
    has_pending: AtomicBool,
}

/// Why the Redis tier could not be set up (a bad address or TLS file; never an unreachable
/// server).
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("redis at {addr}: {source}")]
    Client {
        addr: String,
        source: redis::RedisError,
    },
    #[error("{key} {path}: {source}")]
    File {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// The PEM files of `redis.tls`, read.
fn tls_certificates(cfg: &RedisConfig) -> Result<redis::TlsCertificates, RedisSetupError> {
    let read = |key: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| RedisSetupError::File {
            key,
            path: path.display().to_string(),
            source,
        })
    };
    let t = &cfg.tls;
    let client_tls = match (&t.certificate, &t.key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read("redis.tls.certificate", c)?,
            client_key: read("redis.tls.key", k)?,
        }),
        _ => None,
    };
    let mut roots = Vec::new();
    for ca in &t.clientcas {
        roots.extend(read("redis.tls.clientcas", ca)?);
        roots.push(b'\n');
    }
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert: (!roots.is_empty()).then_some(roots),
    })
}

impl RedisLayerInfo {
    /// Sets up the connection without dialling: an unreachable Redis at start-up is like one
    /// that goes away later.
    pub fn new(cfg: &RedisConfig) -> Result<RedisLayerInfo, RedisSetupError> {
        let err = |source| RedisSetupError::Client {
            addr: cfg.addr.clone(),
            source,
        };
        let (host, port) = crate::config::units::parse_host_port(&cfg.addr).map_err(|why| {
            err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "invalid address",
                why,
            )))
        })?;
        let mut settings = redis::RedisConnectionInfo::default().set_db(cfg.db);
        if let Some(p) = &cfg.password {
            settings = settings.set_password(p.expose());
        }
        let addr = if cfg.tls.enabled {
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        };
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map_err(err)?
            .set_redis_settings(settings);
        let client = if cfg.tls.enabled {
            redis::Client::build_with_tls(info, tls_certificates(cfg)?).map_err(err)?
        } else {
            redis::Client::open(info).map_err(err)?
        };
        let reply = cfg.readtimeout.max(cfg.writetimeout);
        let mut mc = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.dialtimeout))
            .set_response_timeout(Some(reply))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF);
        if cfg.pool.maxactive > 0 {
            mc =
                mc.set_concurrency_limit(usize::try_from(cfg.pool.maxactive).unwrap_or(usize::MAX));
        }
        let conn = ConnectionManager::new_lazy_with_config(client, mc).map_err(err)?;
        Ok(RedisLayerInfo {
            conn,
            deadline: cfg.dialtimeout + reply,
            addr: cfg.addr.clone(),
            quiet_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            epoch: Instant::now(),
            pending: Default::default(),
            has_pending: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `cmd` unless Redis is resting after a failure; `None` when it was not run or failed.
    async fn run<T: redis::FromRedisValue>(&self, what: &str, pipe: redis::Pipeline) -> Option<T> {
        if self.resting() {
            return None;
        }
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(self.deadline, pipe.query_async::<T>(&mut conn)).await;
        match result {
            Ok(Ok(v)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(addr = %self.addr, "redis is reachable again; layer info is shared again");
                }
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(what, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(what, "timed out");
                None
            }
        }
    }

    fn failed(&self, what: &str, error: &str) {
        self.quiet_until.store(
            self.now_ms() + BACKOFF.as_millis() as u64,
            Ordering::Relaxed,
        );
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                addr = %self.addr, operation = what, error,
                "redis unreachable; layer info falls back to the local index until it is back"
            );
        } else {
            tracing::debug!(addr = %self.addr, operation = what, error, "redis still unreachable");
        }
    }

    fn resting(&self) -> bool {
        self.now_ms() < self.quiet_until.load(Ordering::Relaxed)
    }

    fn keep(&self, f: Forget) {
        let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_PENDING {
            q.pop_front();
            tracing::warn!("too many forgets waiting for redis; the oldest is dropped");
        }
        q.push_back(f);
        self.has_pending.store(true, Ordering::Relaxed);
    }

    /// Replays the forgets an outage held back; true when none is left.
    async fn replay(&self) -> bool {
        if !self.has_pending.load(Ordering::Relaxed) {
            return true;
        }
        if self.resting() {
            return false;
        }
        let batch: Vec<Forget> = {
            let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            self.has_pending.store(false, Ordering::Relaxed);
            q.drain(..).collect()
        };
        let mut p = redis::pipe();
        for f in &batch {
            match f {
                Forget::Link(repo, digest) => forget_link_cmds(&mut p, repo, digest),
                Forget::Blob(digest) => forget_blob_cmds(&mut p, digest),
            }
        }
        let done: Option<()> = self.run("replay forgets", p).await;
        if done.is_none() {
            for f in batch {
                self.keep(f);
            }
            return false;
        }
        true
    }

    /// The size of `digest` if Redis says `repo` holds it.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        if !self.replay().await {
            return None;
        }
        let mut p = redis::pipe();
        p.cmd("SISMEMBER")
            .arg(set_key(repo))
            .arg(digest.as_str())
            .cmd("HGET")
            .arg(blob_key(digest))
            .arg("size");
        let (member, size): (bool, Option<String>) = self.run("lookup", p).await?;
        if !member {
            return None;
        }
        size?.parse().ok()
    }

    /// Records that `repo` holds `digest` of `size` bytes.
    pub async fn insert_blob(&self, repo: &RepoName, digest: &Digest, size: u64) {
        if !self.replay().await {
            return;
        }
        let mut p = redis::pipe();
        p.cmd("HSET")
            .arg(blob_key(digest))
            .arg("digest")
            .arg(digest.as_str())
            .arg("size")
            .arg(size)
            .ignore()
            .cmd("HSETNX")
            .arg(blob_key(digest))
            .arg("mediatype")
            .arg(OCTET_STREAM)
            .ignore()
            .cmd("SADD")
            .arg(set_key(repo))
            .arg(digest.as_str())
            .ignore()
            .cmd("HSETNX")
            .arg(repo_blob_key(repo, digest))
            .arg("mediatype")
            .arg(OCTET_STREAM)
            .ignore();
        let _: Option<()> = self.run("insert", p).await;
    }

    /// `repo` no longer holds `digest`.
    pub async fn forget_link(&self, repo: &RepoName, digest: &Digest) {
        let mut p = redis::pipe();
        forget_link_cmds(&mut p, repo, digest);
        let done: Option<()> = self.run("forget link", p).await;
        if done.is_none() {
            self.keep(Forget::Link(repo.clone(), digest.clone()));
        }
    }

    /// `digest` is gone from the store: no repository holds it any more.
    pub async fn forget_blob(&self, digest: &Digest) {
        let mut p = redis::pipe();
        forget_blob_cmds(&mut p, digest);
        let done: Option<()> = self.run("forget blob", p).await;
        if done.is_none() {
            self.keep(Forget::Blob(digest.clone()));
        }
    }
}

fn forget_link_cmds(p: &mut redis::Pipeline, repo: &RepoName, digest: &Digest) {
    p.cmd("SREM")
        .arg(set_key(repo))
        .arg(digest.as_str())
        .ignore()
        .cmd("DEL")
        .arg(repo_blob_key(repo, digest))
        .ignore();
}

fn forget_blob_cmds(p: &mut redis::Pipeline, digest: &Digest) {
    p.cmd("DEL").arg(blob_key(digest)).ignore();
}

fn blob_key(digest: &Digest) -> String {
    format!("blobs::{digest}")
}

fn set_key(repo: &RepoName) -> String {
    format!("repository::{repo}::blobs")
}

fn repo_blob_key(repo: &RepoName, digest: &Digest) -> String {
    format!("repository::{repo}::blobs::{digest}")
}
