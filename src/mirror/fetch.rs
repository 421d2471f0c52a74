//! Single-flight blob fetches. The first request for a missing blob starts one fetch task that
//! streams the upstream body into a temporary file; every request for that blob (the first one
//! included) reads the growing file as the bytes land, so a late joiner gets what has already
//! arrived and then follows the rest. The task runs on even if every client goes away, so the
//! blob still lands in the cache. Readers are woken by a watch channel, never by a timer.
//!
//! Nothing unverified is ever complete for a client: while the fetch runs, readers are held one
//! byte short of the announced size; the last byte is released only once the digest has been
//! verified and the blob committed. A failed fetch ends every reader's stream with an error.

use super::peering::BlobSource;
use crate::index::Origin;
use crate::metrics::Metrics;
use crate::notify::{Action, Event, Notifier, Target};
use crate::oci::{Digest, RepoName};
use crate::registry::Registry;
use crate::storage::{GrowingFile, Lander, StoreError, read_at};
use crate::upstream::UpstreamError;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Where a fetch stands.
#[derive(Debug, Clone)]
pub enum FetchState {
    /// Waiting for the upstream's answer.
    Starting,
    /// Bytes are landing in the staged file; `written` of them are readable.
    Streaming {
        /// The digest matched: every byte may be read, though the blob is not durable yet.
        verified: bool,
        file: GrowingFile,
        size: Option<u64>,
        written: u64,
    },
    /// Verified and committed to the store.
    Done,
    /// Abandoned; nothing was kept.
    Failed(FetchError),
}

/// Why a fetch failed, kept cloneable for every waiter.
#[derive(Debug, Clone)]
pub enum FetchError {
    Upstream(UpstreamError),
    Store(String),
    DigestMismatch(String),
    /// The fetch task went away without an outcome.
    Lost,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Upstream(e) => write!(f, "upstream: {e}"),
            FetchError::Store(e) => write!(f, "storage: {e}"),
            FetchError::DigestMismatch(e) => write!(f, "{e}"),
            FetchError::Lost => f.write_str("fetch task ended without an outcome"),
        }
    }
}

/// One fetch in flight, shared by every reader of its blob.
#[derive(Debug)]
pub struct Fetch {
    state: watch::Receiver<FetchState>,
}

impl Fetch {
    pub fn subscribe(&self) -> watch::Receiver<FetchState> {
        self.state.clone()
    }
}

/// What a fetch task needs.
pub struct FetchJob {
    pub digest: Digest,
    /// The upstream, or the replica that owns the blob (see `peering`).
    pub source: BlobSource,
    pub metrics: Arc<Metrics>,
    pub notifier: Arc<Notifier>,
}

/// Bytes a reader of a growing file takes per read: readers of a miss are many at once (a
/// fleet pulling the same new image), so they keep small buffers.
const FOLLOW_CHUNK: u64 = 128 * 1024;

/// The fetches under way, by digest.
pub type Fetches = Arc<Mutex<HashMap<Digest, Arc<Fetch>>>>;

/// Starts the task. On success the blob is recorded as cached for `local` before `Done` is
/// published, and the fetch leaves `fetches` only after its outcome is published, so a request
/// that arrives at any moment either joins it or finds the blob committed and recorded.
pub fn start(
    job: FetchJob,
    registry: Arc<Registry>,
    local: RepoName,
    fetches: Fetches,
) -> Arc<Fetch> {
    let (tx, rx) = watch::channel(FetchState::Starting);
    let tx = Arc::new(tx);
    let fetch = Arc::new(Fetch { state: rx });
    tokio::spawn(async move {
        // Leaves the map however the task ends, a panic included: later requests then start
        // afresh instead of joining a fetch that will never finish.
        let _leave = Leave {
            fetches: fetches.clone(),
            digest: job.digest.clone(),
        };
        let upstream = job.source.name().to_owned();
        let digest = job.digest.clone();
        let notifier = job.notifier.clone();
        let gauge = job
            .metrics
            .upstream_fetches_in_flight
            .with_label_values(&[&upstream]);
        gauge.inc();
        let mut outcome = run(job, &registry, &tx).await;
        gauge.dec();
        if let Ok(size) = outcome
            && let Err(e) = registry
                .adopt_blob(&local, &digest, size, Origin::Proxy)
                .await
        {
            outcome = Err(FetchError::Store(e.to_string()));
        }
        match &outcome {
            Ok(size) => {
                tracing::info!(%digest, size, upstream, "blob fetched and cached");
                if notifier.wants(Action::CacheFill) {
                    notifier.publish(Event::cache(
                        Action::CacheFill,
                        Target::cached(
                            &upstream,
                            local.as_str(),
                            crate::notify::BLOB_MEDIA_TYPE,
                            Some(digest.clone()),
                            *size,
                        ),
                    ));
                }
            }
            Err(e) => {
                tracing::warn!(%digest, upstream, error = %e, "blob fetch failed; nothing cached")
            }
        }
        let _ = tx.send(match outcome {
            Ok(_) => FetchState::Done,
            Err(e) => FetchState::Failed(e),
        });
    });
    fetch
}

/// Removes a fetch from the map when its task ends (after the outcome is published).
struct Leave {
    fetches: Fetches,
    digest: Digest,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Ok(mut f) = self.fetches.lock() {
            f.remove(&self.digest);
        }
    }
}

async fn run(
    job: FetchJob,
    registry: &Registry,
    tx: &Arc<watch::Sender<FetchState>>,
) -> Result<u64, FetchError> {
    let upstream_err = FetchError::Upstream;
    let store_err = |e: StoreError| FetchError::Store(e.to_string());
    let resp = job.source.get().await.map_err(upstream_err)?;
    let size = resp.len;
    tracing::debug!(digest = %job.digest, size, "upstream blob head");
    let mut writer = registry.blob_writer(&job.digest).await.map_err(store_err)?;
    let _ = tx.send(FetchState::Streaming {
        verified: false,
        file: writer.growing(),
        size,
        written: 0,
    });
    // The bytes land (written, published to readers, hashed) on a blocking thread while this
    // task goes on receiving: the network side never waits for the disk or the hash, and the
    // async workers, which also serve the readers, do neither.
    let lander = writer.lander().await.map_err(store_err)?;
    let (chunks, queue) = mpsc::channel(LANDING_QUEUE);
    let landing = tokio::task::spawn_blocking({
        let tx = tx.clone();
        move || land(lander, queue, &tx)
    });
    let received = receive(resp.body, size, &job.digest, chunks).await;
    let landed = landing
        .await
        .map_err(|e| FetchError::Store(format!("landing thread: {e}")))?;
    // A receiving failure explains a landing that stopped short; a landing failure stops
    // the receiving.
    received.map_err(upstream_err)?;
    writer.landed(landed.map_err(|e| store_err(e.into()))?);
    if let Some(size) = size
        && writer.len() != size
    {
        return Err(upstream_err(UpstreamError::Body(format!(
            "upstream body ended after {} of {size} bytes",
            writer.len()
        ))));
    }
    match writer.verify(&job.digest).await {
        Ok(()) => {}
        Err(StoreError::DigestMismatch { expected, actual }) => {
            job.metrics.verify_failures.inc();
            return Err(FetchError::DigestMismatch(format!(
                "upstream sent content with digest {actual} for {expected}"
            )));
        }
        Err(e) => return Err(store_err(e)),
    }
    // Readers get the last byte now; making the file durable (fsync, rename) is not their wait.
    tx.send_modify(|s| {
        if let FetchState::Streaming { verified, .. } = s {
            *verified = true;
        }
    });
    tracing::debug!(digest = %job.digest, "blob verified");
    let (_, len) = registry
        .commit_blob(writer, None)
        .await
        .map_err(store_err)?;
    Ok(len)
}

/// Chunks received but not landed yet, at most (hyper's chunks are up to ~400 KiB each).
const LANDING_QUEUE: usize = 16;
/// Bytes landed together at most: one write-and-publish step for readers.
const LANDING_BATCH: usize = 1024 * 1024;

/// Passes the upstream body to the landing thread chunk by chunk; stops early (`Ok`) when
/// the landing thread has gone (it failed: its error is the one to report).
async fn receive(
    body: futures::stream::BoxStream<'static, Result<Bytes, UpstreamError>>,
    size: Option<u64>,
    digest: &Digest,
    chunks: mpsc::Sender<Bytes>,
) -> Result<(), UpstreamError> {
    let mut body = body;
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if received == 0 {
            tracing::debug!(%digest, "first upstream body byte");
        }
        received += chunk.len() as u64;
        if let Some(size) = size
            && received > size
        {
            return Err(UpstreamError::Body(format!(
                "upstream sent more than the {size} bytes it announced"
            )));
        }
        if chunks.send(chunk).await.is_err() {
            return Ok(());
        }
    }
    tracing::debug!(%digest, received, "last upstream body byte");
    Ok(())
}

/// The landing thread: appends what is queued (up to `LANDING_BATCH` at a time), publishes
/// the new length to readers, hashes it; ends when the queue is closed and empty.
fn land(
    mut lander: Lander,
    mut queue: mpsc::Receiver<Bytes>,
    tx: &watch::Sender<FetchState>,
) -> std::io::Result<Lander> {
    let mut batch = Vec::with_capacity(LANDING_QUEUE);
    while let Some(first) = queue.blocking_recv() {
        let mut bytes = first.len();
        batch.push(first);
        while bytes < LANDING_BATCH
            && let Ok(more) = queue.try_recv()
        {
            bytes += more.len();
            batch.push(more);
        }
        lander.append(&batch, |written| {
            tx.send_modify(|s| {
                if let FetchState::Streaming { written: w, .. } = s {
                    *w = written;
                }
            })
        })?;
        batch.clear();
    }
    Ok(lander)
}

/// Waits until the fetch has an answer from the upstream: `Ok(Some(file, size))` while
/// streaming, `Ok(None)` when already committed, or the failure.
pub async fn started(fetch: &Fetch) -> Result<Option<(GrowingFile, Option<u64>)>, FetchError> {
    let mut rx = fetch.subscribe();
    let state = rx
        .wait_for(|s| !matches!(s, FetchState::Starting))
        .await
        .map_err(|_| FetchError::Lost)?
        .clone();
    match state {
        FetchState::Streaming { file, size, .. } => Ok(Some((file, size))),
        FetchState::Done => Ok(None),
        FetchState::Failed(e) => Err(e),
        FetchState::Starting => unreachable!("waited past Starting"),
    }
}

/// The blob's size if the upstream has announced it, without waiting.
pub fn known_size(fetch: &Fetch) -> Option<u64> {
    match &*fetch.state.borrow() {
        FetchState::Streaming { size, .. } => *size,
        _ => None,
    }
}

/// How far a reader may read now: everything once committed, one byte short of the end while
/// the digest is unverified. `Err` when the fetch failed.
fn readable(state: &FetchState, size: u64) -> Result<u64, FetchError> {
    match state {
        FetchState::Starting => Ok(0),
        FetchState::Streaming { verified: true, .. } => Ok(size),
        FetchState::Streaming { written, .. } => Ok((*written).min(size.saturating_sub(1))),
        FetchState::Done => Ok(size),
        FetchState::Failed(e) => Err(e.clone()),
    }
}

/// How the bytes of `[start, start + len)` of a blob still landing become readable: a stream of
/// increments (each above 0, together `len`), or an error when the fetch fails. Readers send
/// each increment as it comes: read and copied (`follow`), or by `sendfile` from the staged file.
pub fn arrivals(
    fetch: Arc<Fetch>,
    start: u64,
    len: u64,
) -> impl Stream<Item = std::io::Result<u64>> + Send {
    let end = start + len;
    let rx = fetch.subscribe();
    futures::stream::unfold((rx, start, fetch), move |(mut rx, pos, fetch)| async move {
        if pos >= end {
            return None;
        }
        loop {
            // The range's end bounds what is readable (held one byte short until verified).
            let now = readable(&rx.borrow_and_update(), end);
            let avail = match now {
                Ok(a) => a.min(end),
                Err(e) => {
                    let err = std::io::Error::other(format!("blob fetch failed: {e}"));
                    return Some((Err(err), (rx, end, fetch)));
                }
            };
            if avail > pos {
                return Some((Ok(avail - pos), (rx, avail, fetch)));
            }
            if rx.changed().await.is_err() {
                // The task is gone; its last state decides.
                if matches!(&*rx.borrow(), FetchState::Done) {
                    continue;
                }
                let err = std::io::Error::other("blob fetch ended without an outcome");
                return Some((Err(err), (rx, end, fetch)));
            }
        }
    })
}

/// Streams `len` bytes from `start` of a blob still landing in `file`, read as they arrive in
/// pieces of at most `FOLLOW_CHUNK`.
pub fn follow(
    fetch: Arc<Fetch>,
    file: std::fs::File,
    start: u64,
    len: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    let file = Arc::new(file);
    let mut pos = start;
    let pieces = arrivals(fetch, start, len).flat_map(move |step| {
        let pieces: Vec<std::io::Result<(u64, usize)>> = match step {
            Ok(n) => {
                let (from, to) = (pos, pos + n);
                pos = to;
                (from..to)
                    .step_by(FOLLOW_CHUNK as usize)
                    .map(|p| Ok((p, (to - p).min(FOLLOW_CHUNK) as usize)))
                    .collect()
            }
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(pieces)
    });
    pieces.then(move |piece| {
        let file = file.clone();
        async move {
            let (at, want) = piece?;
            let chunk = tokio::task::spawn_blocking(move || read_at(&file, at, want))
                .await
                .map_err(std::io::Error::other)??;
            if chunk.len() < want {
                return Err(std::io::Error::other("blob file ended early"));
            }
            Ok(chunk)
        }
    })
}
