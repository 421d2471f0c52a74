//! Proxied blobs: cache hit, single-flight miss, and HEAD without a download.

use super::fetch::{self, FetchJob};
use super::peering::{BlobSource, Peering};
use super::{BlobContent, Mirror, ProxyRepo};
use crate::error::RegistryError;
use crate::index::Origin;
use crate::metrics::{ObjectKind, Outcome, Source};
use crate::oci::Digest;
use crate::upstream::UpstreamError;
use std::sync::Arc;

type Result<T> = std::result::Result<T, RegistryError>;

fn upstream_error(e: UpstreamError, digest: &Digest) -> RegistryError {
    match e {
        UpstreamError::NotFound => RegistryError::blob_unknown(digest),
        other => other.into(),
    }
}

impl Mirror {
    /// The size of a proxied blob, asking the upstream (HEAD, no download) on a miss.
    pub async fn blob_size(&self, p: &ProxyRepo, digest: &Digest) -> Result<u64> {
        // Existence checks are not counted as lookups: only GETs move bytes.
        if let Some(size) = self.registry.blob_size(&p.local, digest).await? {
            return Ok(size);
        }
        // Being fetched (or just fetched and being committed): its size is known already.
        let in_flight = self
            .blob_fetches
            .lock()
            .expect("fetch map poisoned")
            .get(digest)
            .cloned();
        if let Some(size) = in_flight.and_then(|f| fetch::known_size(&f)) {
            return Ok(size);
        }
        match p
            .upstream
            .client
            .head_blob(&p.remote, digest.as_str())
            .await
        {
            Ok(Some(size)) => Ok(size),
            Ok(None) => {
                // No length upstream: fetch it, which also caches it.
                Ok(self.blob(p, digest).await?.size)
            }
            // An existence check is how a client starts a push: whatever the upstream says
            // (nothing, no access, not reachable), the blob is not here, and the client may
            // push it. Pulls use GET, which reports upstream failures as they are.
            Err(e) => {
                tracing::debug!(%digest, repo = %p.local, error = %e, "blob HEAD: not here, upstream could not confirm it");
                Err(RegistryError::blob_unknown(digest))
            }
        }
    }

    /// A proxied blob's content, from the cache or streaming in from the upstream.
    pub async fn blob(&self, p: &ProxyRepo, digest: &Digest) -> Result<BlobContent> {
        let up = p.upstream.name.as_str();
        // One lookup per request, whatever turns the loop takes.
        let mut counted = false;
        loop {
            if let Some(open) = self.registry.open_blob(&p.local, digest).await? {
                if !counted {
                    self.metrics
                        .cache_lookup(ObjectKind::Blob, up, Outcome::Hit);
                }
                return Ok(BlobContent::stored(open, Source::Cache));
            }
            // Present in the store for another repository: the upstream must confirm that
            // this repository has it too before we serve it.
            if let Some(size) = self.registry.stored_size(digest).await?
                && !self.fetching(digest)
            {
                match p
                    .upstream
                    .client
                    .head_blob(&p.remote, digest.as_str())
                    .await
                {
                    Ok(_) => {
                        self.registry
                            .adopt_blob(&p.local, digest, size, Origin::Proxy)
                            .await?;
                        continue;
                    }
                    Err(e) => return Err(upstream_error(e, digest)),
                }
            }
            let (f, outcome) = self.join_or_start(p, digest);
            if !counted {
                self.metrics.cache_lookup(ObjectKind::Blob, up, outcome);
                counted = true;
            }
            match fetch::started(&f).await {
                // An announced size of zero would hand out a complete (empty) body unverified.
                Ok(Some((growing, Some(size)))) if size > 0 => {
                    if let Some(file) = growing.open()? {
                        return Ok(BlobContent::growing(f, file, size));
                    }
                    // Committed meanwhile: once recorded, the store has it.
                }
                // No (or a zero) Content-Length upstream: the whole blob first, then serve it.
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(e) => return Err(fetch_error(e, digest)),
            }
            // A failure is the answer; success means the store has the blob now.
            fetch_outcome(&f)
                .await
                .map_err(|e| fetch_error(e, digest))?;
        }
    }

    /// Joins the fetch of `digest` under way, or starts one.
    fn join_or_start(&self, p: &ProxyRepo, digest: &Digest) -> (Arc<fetch::Fetch>, Outcome) {
        let mut fetches = self.blob_fetches.lock().expect("fetch map poisoned");
        if let Some(f) = fetches.get(digest) {
            return (f.clone(), Outcome::Coalesced);
        }
        let peering = Peering::for_repo(self.peering.as_ref(), p);
        let job = FetchJob {
            digest: digest.clone(),
            source: BlobSource::new(p, digest, peering),
            metrics: self.metrics.clone(),
            notifier: self.options.notifier.clone(),
        };
        let f = fetch::start(
            job,
            self.registry.clone(),
            p.local.clone(),
            self.blob_fetches.clone(),
        );
        fetches.insert(digest.clone(), f.clone());
        (f, Outcome::Miss)
    }
}

/// Waits until a fetch is done (`Ok`) or failed.
pub(super) async fn fetch_outcome(f: &fetch::Fetch) -> std::result::Result<(), fetch::FetchError> {
    let mut rx = f.subscribe();
    let state = rx
        .wait_for(|s| matches!(s, fetch::FetchState::Done | fetch::FetchState::Failed(_)))
        .await
        .map_err(|_| fetch::FetchError::Lost)?
        .clone();
    match state {
        fetch::FetchState::Failed(e) => Err(e),
        _ => Ok(()),
    }
}

/// What a client is told of a failed fetch.
pub(super) fn fetch_error(e: fetch::FetchError, digest: &Digest) -> RegistryError {
    match e {
        fetch::FetchError::Upstream(e) => upstream_error(e, digest),
        other => RegistryError::new(
            crate::error::ErrorCode::Unavailable,
            format!("fetching {digest} failed: {other}"),
        ),
    }
}
