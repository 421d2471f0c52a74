//! A blob whose digest is known before its bytes arrive (a mirror fill, `POST ?digest=`) goes
//! up to its own key *while* it is staged: a task follows the staged file as the writer
//! reports it grows, and sends each whole `chunksize` part to a multipart upload as soon as
//! the file holds it. The multipart upload starts only once the file is longer than one part
//! (a blob of one part is put once, at commit, as before). It is completed only by `commit`,
//! which receives the blob verified against its digest; a write that fails, breaks off or
//! does not match drops its `Early`, and the task aborts the upload. A process killed
//! meanwhile leaves its marker, and its next start aborts the upload (`abort_stale_uploads`).
//! Must not: read past what the writer reported, or complete anything itself.

use super::{Marker, S3Backend, s3_err};
use crate::oci::Digest;
use crate::storage::StoreError;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutMultipartOptions, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// How far the staged file has been written, as its writer reports it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    /// Bytes readable in the staged file.
    pub written: u64,
    /// The blob's length, once the writer is done.
    pub end: Option<u64>,
    /// The write was given up: abort.
    pub dropped: bool,
}

/// The writer's side: where it reports progress.
pub type ProgressTx = Arc<watch::Sender<Progress>>;

/// Parts of one blob sent at once while it is staged.
const PARTS_IN_FLIGHT: usize = 4;

/// A multipart upload started and filled: completed by `commit` (`complete_sent`) or aborted
/// (`abort`). One dropped otherwise — a commit cancelled midway, its client gone — aborts
/// itself, so no path leaves an upload neither completed nor aborted.
pub(super) struct Sent {
    pub s3: S3Backend,
    pub key: Key,
    pub id: String,
    pub marker: Key,
    pub parts: Vec<PartId>,
    /// Completed or aborted already.
    pub settled: bool,
}

impl Drop for Sent {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let s3 = self.s3.clone();
        let mut orphan = Sent {
            s3: self.s3.clone(),
            key: self.key.clone(),
            id: self.id.clone(),
            marker: self.marker.clone(),
            parts: Vec::new(),
            settled: true,
        };
        runtime.spawn(async move { s3.abort(&mut orphan).await });
    }
}

/// An upload that follows a staged file; see the module doc.
#[derive(Debug)]
pub struct Early {
    progress: ProgressTx,
    task: Option<tokio::task::JoinHandle<Result<Option<SentBox>, StoreError>>>,
}

/// `Sent` behind a box with a `Debug` of its own (object_store's ids are plain strings).
pub(super) struct SentBox(pub Sent);

impl std::fmt::Debug for SentBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sent({}, {} parts)", self.0.key, self.0.parts.len())
    }
}

impl Early {
    /// Where the writer reports how far it got (for a blocking thread writing the file).
    pub fn progress(&self) -> ProgressTx {
        self.progress.clone()
    }

    /// The staged file holds `written` bytes now.
    pub fn report(&self, written: u64) {
        self.progress.send_modify(|p| p.written = written);
    }

    /// The write is done and verified at `len` bytes: the parts sent, with the upload they
    /// belong to, or `None` when the blob fits one part and nothing was started.
    pub(super) async fn finish(mut self, len: u64) -> Result<Option<Sent>, StoreError> {
        self.progress.send_modify(|p| {
            p.written = len;
            p.end = Some(len);
        });
        let task = self.task.take().expect("finished once");
        match task.await {
            Ok(r) => r.map(|s| s.map(|b| b.0)),
            Err(e) => Err(StoreError::Io(std::io::Error::other(e))),
        }
    }
}

impl Drop for Early {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.progress.send_modify(|p| p.dropped = true);
        }
    }
}

impl S3Backend {
    /// Starts following the staged file at `path` of blob `digest` (see the module doc).
    pub fn early_upload(&self, digest: &Digest, path: PathBuf) -> Early {
        let (tx, rx) = watch::channel(Progress::default());
        let task = tokio::spawn({
            let s3 = self.clone();
            let key = self.blob_key(digest);
            async move { s3.follow(key, path, rx).await.map(|s| s.map(SentBox)) }
        });
        Early {
            progress: Arc::new(tx),
            task: Some(task),
        }
    }

    async fn follow(
        &self,
        key: Key,
        path: PathBuf,
        mut rx: watch::Receiver<Progress>,
    ) -> Result<Option<Sent>, StoreError> {
        let part = self.inner.chunk_size;
        let mut started: Option<Sent> = None;
        let mut sending = tokio::task::JoinSet::new();
        let mut sent: Vec<(u64, PartId)> = Vec::new();
        let mut file: Option<Arc<std::fs::File>> = None;
        let mut next = 0u64;
        loop {
            // Part `next` can go once the file holds it whole and more follows it (or the
            // end is known): a blob of exactly one part is never a multipart upload.
            let state = *rx
                .wait_for(|p| p.dropped || p.end.is_some() || p.written > (next + 1) * part)
                .await
                .map_err(|_| dropped())?;
            if state.dropped {
                return Err(dropped());
            }
            let start = next * part;
            let len = match state.end {
                Some(end) if end <= start => break,
                Some(end) if started.is_none() && end <= part => break,
                Some(end) => (end - start).min(part),
                None => part,
            };
            if started.is_none() {
                // Already there (the same bytes): nothing to send; the commit keeps it.
                match self.inner.store.head(&key).await {
                    Ok(_) => return Ok(None),
                    Err(e) if super::not_found(&e) => {}
                    Err(e) => return Err(s3_err(e)),
                }
                started = Some(self.start_multipart(&key).await?);
            }
            while sending.len() >= PARTS_IN_FLIGHT {
                sent.push(joined(sending.join_next().await)?);
            }
            let opened = match &file {
                Some(f) => Arc::clone(f),
                None => Arc::clone(file.insert(Arc::new(std::fs::File::open(&path)?))),
            };
            let (store, key, id) = (
                self.inner.store.clone(),
                key.clone(),
                started.as_ref().expect("started above").id.clone(),
            );
            let index = next;
            sending.spawn(async move {
                let data = tokio::task::spawn_blocking(move || {
                    crate::storage::read_at(&opened, start, len as usize)
                })
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
                if data.len() as u64 != len {
                    return Err(StoreError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "staged blob is shorter than its writer reported",
                    )));
                }
                let part = store
                    .put_part(&key, &id, index as usize, PutPayload::from(data))
                    .await
                    .map_err(s3_err)?;
                Ok((index, part))
            });
            next += 1;
        }
        while let Some(r) = sending.join_next().await {
            sent.push(joined(Some(r))?);
        }
        let Some(mut done) = started else {
            return Ok(None);
        };
        sent.sort_by_key(|(i, _)| *i);
        done.parts = sent.into_iter().map(|(_, p)| p).collect();
        Ok(Some(done))
    }

    /// Starts a multipart upload at `key`, recorded by a marker first seen by
    /// `abort_stale_uploads`.
    pub(super) async fn start_multipart(&self, key: &Key) -> Result<Sent, StoreError> {
        let store = &self.inner.store;
        let opts = PutMultipartOptions {
            attributes: self.inner.attributes.clone(),
            ..Default::default()
        };
        let id = store
            .create_multipart_opts(key, opts)
            .await
            .map_err(s3_err)?;
        let marker = self.key(&format!(
            "stevedore/multipart/{}/{}",
            self.inner.node,
            uuid::Uuid::new_v4().simple()
        ));
        let record = serde_json::to_vec(&Marker {
            key: key.to_string(),
            id: id.clone(),
        })
        .expect("a marker serializes");
        if let Err(e) = store.put(&marker, record.into()).await {
            let _ = store.abort_multipart(key, &id).await;
            return Err(s3_err(e));
        }
        Ok(Sent {
            s3: self.clone(),
            key: key.clone(),
            id,
            marker,
            parts: Vec::new(),
            settled: false,
        })
    }

    /// Completes what `follow` sent; aborted on failure. The marker goes either way (an
    /// abort that failed keeps it, for the next start-up).
    pub(super) async fn complete_sent(&self, mut sent: Sent) -> Result<(), StoreError> {
        let done = self
            .inner
            .store
            .complete_multipart(&sent.key, &sent.id, std::mem::take(&mut sent.parts))
            .await
            .map(|_| ())
            .map_err(s3_err);
        match done {
            Ok(()) => {
                sent.settled = true;
                self.forget_marker(&sent.marker).await;
                Ok(())
            }
            Err(e) => {
                self.abort(&mut sent).await;
                Err(e)
            }
        }
    }

    /// Aborts a started upload and forgets its marker (kept when the abort fails, for the
    /// next start-up).
    pub(super) async fn abort(&self, sent: &mut Sent) {
        sent.settled = true;
        match self.inner.store.abort_multipart(&sent.key, &sent.id).await {
            Ok(()) => self.forget_marker(&sent.marker).await,
            Err(e) => {
                tracing::warn!(key = %sent.key, error = %e, "aborting a multipart upload failed; the next start-up retries");
            }
        }
    }
}

/// A part sent: its index and what completing the upload names it by.
type PartSent = Result<(u64, PartId), StoreError>;

/// A part's outcome from the join set.
fn joined(r: Option<Result<PartSent, tokio::task::JoinError>>) -> PartSent {
    match r {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(StoreError::Io(std::io::Error::other(e))),
        None => Err(StoreError::Io(std::io::Error::other(
            "no part was being sent",
        ))),
    }
}

fn dropped() -> StoreError {
    StoreError::Io(std::io::Error::other(
        "the blob's write was given up; its upload is aborted",
    ))
}
