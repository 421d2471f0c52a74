//! Fetching through the replica that owns the content (`proxy.peers`). A blob's owner is
//! chosen by its digest, a manifest's by its digest or by repository and tag, over the live
//! replicas; a replica that does not own what it misses asks the owner instead of the
//! upstream, so the fleet asks the upstream once. A request that came from a peer is never
//! forwarded again (one hop).
//!
//! When the owner fails as a dead replica fails (no connection, no answer, its body cut
//! short), it is marked down and the next owner is asked, then the upstream itself; a blob
//! body goes on from where it broke (the bytes already received are skipped in the new
//! source's body), so a reader never sees the break, and the digest is checked over the whole
//! as always (`fetch`). An owner's answer (404, 429, 5xx) is the answer.
//!
//! Knows no HTTP types; peers are reached through `upstream::peers`.

use super::ProxyRepo;
use crate::metrics::Metrics;
use crate::oci::Digest;
use crate::upstream::peers::{Owner, Peer, Peers};
use crate::upstream::{BlobResponse, FetchedManifest, ManifestHead, UpstreamClient, UpstreamError};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::future::Future;
use std::sync::Arc;

/// Owners tried before a request goes to the upstream itself.
const MAX_OWNERS: usize = 2;

/// The peers and what forwards are counted in.
#[derive(Clone)]
pub struct Peering {
    pub peers: Arc<Peers>,
    pub metrics: Arc<Metrics>,
}

/// Whether a failed forward says the owner is gone (rather than answering).
fn owner_gone(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Connect(_) | UpstreamError::Timeout(_) | UpstreamError::Body(_)
    )
}

impl Peering {
    /// The peering that applies to `p`: none for a request that came from a peer.
    pub fn for_repo(peering: Option<&Peering>, p: &ProxyRepo) -> Option<Peering> {
        peering.filter(|_| !p.forwarded).cloned()
    }

    /// Asks the owner of `key` with `via_peer`, or the upstream with `direct` when this
    /// replica owns it (or the owners tried are gone, or refuse our credentials).
    pub async fn ask<T, P, PF, D, DF>(
        &self,
        p: &ProxyRepo,
        key: &str,
        via_peer: P,
        direct: D,
    ) -> Result<T, UpstreamError>
    where
        P: Fn(Arc<UpstreamClient>, Option<String>, String) -> PF,
        PF: Future<Output = Result<T, UpstreamError>>,
        D: FnOnce() -> DF,
        DF: Future<Output = Result<T, UpstreamError>>,
    {
        let mut tried = Vec::new();
        while tried.len() < MAX_OWNERS {
            let Owner::Peer(peer) = self.peers.owner(key, &tried) else {
                break;
            };
            let (name, ns) = (p.asked.0.to_string(), p.asked.1.clone());
            match via_peer(peer.client.clone(), ns, name).await {
                Ok(v) => {
                    self.count("manifest", "ok");
                    return Ok(v);
                }
                Err(e) if owner_gone(&e) => {
                    self.count("manifest", "failed");
                    self.peers.mark_down(&peer.addr, &e);
                    tried.push(peer.addr);
                }
                Err(UpstreamError::Unauthorized(why)) => {
                    self.count("manifest", "failed");
                    tracing::warn!(peer = %peer.addr, "peer refused our credentials (proxy.peers.username/password): {why}; asking the upstream");
                    break;
                }
                Err(e) => {
                    self.count("manifest", "ok");
                    return Err(e);
                }
            }
        }
        direct().await
    }

    fn count(&self, kind: &str, outcome: &str) {
        self.metrics
            .peer_forwards
            .with_label_values(&[kind, outcome])
            .inc();
    }
}

/// Where a blob fetch gets its bytes: the owner replica, else the next owner, else the
/// upstream; see the module header.
pub struct BlobSource {
    upstream: Arc<UpstreamClient>,
    remote: String,
    digest: Digest,
    peering: Option<Peering>,
    asked: (String, Option<String>),
    tried: Vec<String>,
    /// The peer whose body is being read; `None` while reading the upstream's.
    current: Option<Peer>,
}

impl BlobSource {
    pub fn new(p: &ProxyRepo, digest: &Digest, peering: Option<Peering>) -> BlobSource {
        BlobSource {
            upstream: p.upstream.client.clone(),
            remote: p.remote.clone(),
            digest: digest.clone(),
            peering,
            asked: (p.asked.0.to_string(), p.asked.1.clone()),
            tried: Vec::new(),
            current: None,
        }
    }

    /// The upstream's name (metric label).
    pub fn name(&self) -> &str {
        self.upstream.name()
    }

    /// The blob's response: headers from the first source that answers, and a body that goes
    /// on from the next source if a peer's breaks off.
    pub async fn get(mut self) -> Result<BlobResponse, UpstreamError> {
        let first = self.open().await?;
        let len = first.len;
        let state = Resume {
            source: self,
            body: first.body,
            len,
            pos: 0,
            skip: 0,
            done: false,
        };
        let body = futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let item = st.next().await;
            match item {
                Some(Err(_)) => st.done = true,
                None => return None,
                Some(Ok(_)) => {}
            }
            item.map(|i| (i, st))
        })
        .boxed();
        Ok(BlobResponse { len, body })
    }

    /// Opens the next source: the owner while it is a peer not yet tried, else the upstream.
    async fn open(&mut self) -> Result<BlobResponse, UpstreamError> {
        if let Some(peering) = self.peering.clone() {
            while self.tried.len() < MAX_OWNERS {
                let key = self.digest.as_str();
                let Owner::Peer(peer) = peering.peers.owner(key, &self.tried) else {
                    break;
                };
                let (name, ns) = (&self.asked.0, self.asked.1.as_deref());
                match peer.client.get_blob_in(ns, name, key).await {
                    Ok(resp) => {
                        peering.count("blob", "ok");
                        tracing::debug!(digest = %self.digest, peer = %peer.addr, "blob fetched through its owner");
                        self.current = Some(peer);
                        return Ok(resp);
                    }
                    Err(e) if owner_gone(&e) => {
                        peering.count("blob", "failed");
                        peering.peers.mark_down(&peer.addr, &e);
                        self.tried.push(peer.addr);
                    }
                    Err(UpstreamError::Unauthorized(why)) => {
                        peering.count("blob", "failed");
                        tracing::warn!(peer = %peer.addr, "peer refused our credentials (proxy.peers.username/password): {why}; asking the upstream");
                        break;
                    }
                    Err(e) => {
                        peering.count("blob", "ok");
                        return Err(e);
                    }
                }
            }
        }
        self.current = None;
        self.upstream
            .get_blob(&self.remote, self.digest.as_str())
            .await
    }

    /// After a body broke off: whether another source may go on (the broken one was a peer).
    fn replaceable(&mut self, e: &UpstreamError) -> bool {
        let Some(peer) = self.current.take() else {
            return false;
        };
        let Some(peering) = &self.peering else {
            return false;
        };
        peering.metrics.peer_fallbacks.inc();
        peering.peers.mark_down(&peer.addr, e);
        tracing::warn!(digest = %self.digest, peer = %peer.addr, error = %e, "owner replica failed mid-blob; going on from another source");
        self.tried.push(peer.addr);
        true
    }
}

/// A blob body that survives its owner replica: see [`BlobSource::get`].
struct Resume {
    source: BlobSource,
    body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    len: Option<u64>,
    /// Bytes handed on so far.
    pos: u64,
    /// Bytes of the current body still to skip (already handed on from a broken one).
    skip: u64,
    done: bool,
}

impl Resume {
    async fn next(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        loop {
            match self.body.next().await {
                None => return None,
                Some(Ok(mut chunk)) => {
                    if self.skip > 0 {
                        let n = self.skip.min(chunk.len() as u64);
                        self.skip -= n;
                        chunk = chunk.slice(n as usize..);
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    self.pos += chunk.len() as u64;
                    return Some(Ok(chunk));
                }
                Some(Err(e)) => {
                    if !self.source.replaceable(&e) {
                        return Some(Err(e));
                    }
                    let next = match self.source.open().await {
                        Ok(n) => n,
                        Err(e) => return Some(Err(e)),
                    };
                    if let (Some(a), Some(b)) = (self.len, next.len)
                        && a != b
                    {
                        return Some(Err(UpstreamError::Body(format!(
                            "the next source announced {b} bytes, the first {a}"
                        ))));
                    }
                    self.body = next.body;
                    self.skip = self.pos;
                }
            }
        }
    }
}

/// Manifests are routed only when no cooldown applies: the owner would answer with the
/// digest its own cooldown admits, which this replica's cooldown would judge again.
fn manifest_peering<'a>(peering: Option<&'a Peering>, p: &ProxyRepo) -> Option<&'a Peering> {
    peering.filter(|_| !p.forwarded && p.upstream.cooldown.is_zero())
}

/// The owner key of a manifest reference: its digest, or repository and tag.
fn manifest_key(p: &ProxyRepo, reference: &str) -> String {
    if reference.contains(':') {
        reference.to_owned()
    } else {
        format!("{}:{reference}", p.local)
    }
}

/// GET of a manifest upstream, through its owner replica when there is one.
pub(super) async fn get_manifest(
    peering: Option<&Peering>,
    p: &ProxyRepo,
    reference: &str,
    accept: &[&str],
) -> Result<FetchedManifest, UpstreamError> {
    let direct = || p.upstream.client.get_manifest(&p.remote, reference, accept);
    match manifest_peering(peering, p) {
        None => direct().await,
        Some(peering) => {
            let via_peer = |c: Arc<UpstreamClient>, ns: Option<String>, name: String| async move {
                c.get_manifest_in(ns.as_deref(), &name, reference, accept)
                    .await
            };
            peering
                .ask(p, &manifest_key(p, reference), via_peer, direct)
                .await
        }
    }
}

/// HEAD of a manifest upstream, through its owner replica when there is one.
pub(super) async fn head_manifest(
    peering: Option<&Peering>,
    p: &ProxyRepo,
    reference: &str,
    accept: &[&str],
) -> Result<ManifestHead, UpstreamError> {
    let direct = || {
        p.upstream
            .client
            .head_manifest(&p.remote, reference, accept)
    };
    match manifest_peering(peering, p) {
        None => direct().await,
        Some(peering) => {
            let via_peer = |c: Arc<UpstreamClient>, ns: Option<String>, name: String| async move {
                c.head_manifest_in(ns.as_deref(), &name, reference, accept)
                    .await
            };
            peering
                .ask(p, &manifest_key(p, reference), via_peer, direct)
                .await
        }
    }
}
