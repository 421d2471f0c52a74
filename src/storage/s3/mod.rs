//! `S3Backend`: committed blobs as objects of an S3-compatible bucket (`storage.s3`), in
//! distribution's layout, so that a bucket written by one is readable by the other:
//!
//! ```text
//! <rootdirectory>/docker/registry/v2/blobs/<algorithm>/<2 hex>/<hex>/data   a committed blob
//! <rootdirectory>/stevedore/objects/<uuid>                                 a blob pushed in parts
//! <rootdirectory>/stevedore/blobs/<algorithm>/<2 hex>/<hex>/<uuid>         names its digest
//! <rootdirectory>/stevedore/quarantine/<algorithm>/<hex>                   set aside by verify
//! <rootdirectory>/stevedore/multipart/<node>/<uuid>                        a multipart upload
//!                                                                          under way
//! ```
//!
//! A blob whose digest is known before its bytes go up (a mirror fill, a monolithic push, a
//! blob of one part) is written at distribution's key. A chunked push learns its digest only
//! at its final PUT, after its parts went up to a multipart upload whose key was named when it
//! started: that upload completes at `stevedore/objects/<session>` and stays there (S3 has no
//! rename, and a server-side copy would write every byte again), named by an empty object
//! `stevedore/blobs/<alg>/<2 hex>/<hex>/<session>` written after it. Lookups try where the
//! blob was last found, then distribution's key, then the names (one LIST). Deleting removes the name before the
//! object, so a name never points at nothing for long; an object no name points at (a crash
//! between the two writes) is swept by the maintenance job after its grace (`orphans`).
//!
//! `shared.rs` adds what the one maintenance job (garbage collection and eviction on the
//! shared bucket) reads and writes: its lease, links, markers, candidates, access records.
//!
//! The only module that talks to the object store (the `object_store` crate stays in here).
//! A commit uploads the staged, verified blob: one PUT below `chunksize`, else a multipart
//! upload in `chunksize` parts, completed only once every part is in and aborted on any
//! failure, so the digest's key never names partial bytes. A blob whose digest was known
//! before it arrived has its parts sent while it is staged (`early.rs`): the commit then only
//! completes them. Each multipart upload is recorded
//! by a marker object while it runs; a node that was killed mid-upload aborts its own
//! leftovers at its next start (`abort_stale_uploads`), and any node those of others older
//! than a day. Reads are ranged GETs; `presign` hands out short-lived GET URLs for redirects.
//! Push upload sessions live in the bucket too (`uploads.rs`), so any replica can continue one;
//! repository metadata (links, tags, markers) is written and read here as small objects
//! (`meta.rs`), in `storage::SharedMeta`'s layout.
//! Must not: hash (only `Verified` blobs arrive; `uploads.rs` hashes what clients push), keep a
//! whole blob in memory (a few parts at most per upload), or know what the registry's metadata
//! means.

mod early;
mod http;
mod meta;
mod shared;
mod uploads;

pub use early::{Early, ProgressTx};
use shared::modified_ms;
pub use shared::{BucketBlob, BucketKey, Lease, LeaseError, Link, LinkKind};
pub use uploads::{BucketSession, BucketUploads};

use super::{BlobBackend, BlobRead, RangeSource, StoreError, Verified};
use crate::config::S3Config;
use crate::oci::{Algorithm, Digest};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where chunked pushes' blobs stay (`<uuid>`), and their names (`<alg>/<2 hex>/<hex>/<uuid>`).
const OBJECTS: &str = "stevedore/objects";
const NAMES: &str = "stevedore/blobs";

/// Parts of one multipart upload sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// How old another node's multipart upload must be before any node aborts it: no blob takes
/// a day to upload.
const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct S3Backend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: AmazonS3,
    /// The key prefix (`rootdirectory` without its slashes), empty for the bucket's root.
    root: String,
    chunk_size: u64,
    /// Storage class of new objects.
    attributes: Attributes,
    /// This node's name in multipart markers (kept in its local cache directory).
    node: String,
    /// Digest → the object holding it (distribution's key or a named object), as last
    /// found: a blob never changes its object; one deleted is forgotten when found gone.
    named: moka::future::Cache<Digest, Key>,
}

fn s3_err(e: object_store::Error) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("object store: {e}")))
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// The endpoint URL of `regionendpoint`, with a scheme from `secure` when it names none.
fn endpoint(config: &S3Config) -> Option<String> {
    let e = config.regionendpoint.as_deref()?.trim_end_matches('/');
    Some(if e.contains("://") {
        e.to_owned()
    } else if config.secure {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    })
}

impl S3Backend {
    /// The bucket of `config`; `local` is the node's cache directory, where its name for
    /// multipart markers is kept. Sends no request.
    pub async fn open(config: &S3Config, local: &Path) -> Result<S3Backend, StoreError> {
        let user_agent = match &config.useragent {
            Some(agent) => agent.parse().map_err(|_| {
                StoreError::Io(std::io::Error::other(
                    "storage.s3.useragent is not a valid header value",
                ))
            })?,
            None => {
                ::http::HeaderValue::from_static(concat!("stevedore/", env!("CARGO_PKG_VERSION")))
            }
        };
        let endpoint = endpoint(config);
        let mut builder = AmazonS3Builder::new()
            .with_region(&config.region)
            .with_bucket_name(&config.bucket)
            .with_http_connector(http::Connector {
                connect_timeout: Duration::from_secs(10),
                timeout: Duration::from_secs(120),
                user_agent,
            })
            .with_virtual_hosted_style_request(match config.forcepathstyle {
                Some(path_style) => !path_style,
                None => endpoint.is_none(),
            });
        if let Some(e) = &endpoint {
            builder = builder
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"));
        }
        if let Some(id) = &config.accesskey {
            builder = builder.with_access_key_id(id);
        }
        if let Some(key) = &config.secretkey {
            builder = builder.with_secret_access_key(key.expose());
        }
        if let (true, Some(key)) = (config.encrypt, &config.keyid) {
            builder = builder.with_sse_kms_encryption(key);
        }
        let store = builder.build().map_err(s3_err)?;
        let mut attributes = Attributes::new();
        if config.storageclass != "STANDARD" {
            attributes.insert(Attribute::StorageClass, config.storageclass.clone().into());
        }
        Ok(S3Backend {
            inner: Arc::new(Inner {
                store,
                root: config.rootdirectory.trim_matches('/').to_owned(),
                chunk_size: config.chunksize,
                attributes,
                node: node_name(local).await?,
                named: moka::future::Cache::new(65_536),
            }),
        })
    }

    fn key(&self, rest: &str) -> Key {
        if self.inner.root.is_empty() {
            Key::from(rest)
        } else {
            Key::from(format!("{}/{rest}", self.inner.root))
        }
    }

    fn blobs_prefix(&self) -> Key {
        self.key("docker/registry/v2/blobs")
    }

    fn blob_key(&self, digest: &Digest) -> Key {
        let hex = digest.hex();
        self.key(&format!(
            "docker/registry/v2/blobs/{}/{}/{hex}/data",
            digest.algorithm().name(),
            &hex[..2]
        ))
    }

    /// Where a blob pushed in parts by session `id` lives.
    fn object_key(&self, id: &str) -> Key {
        self.key(&format!("{OBJECTS}/{id}"))
    }

    /// The directory of the names of `digest`'s objects.
    fn names_prefix(&self, digest: &Digest) -> Key {
        let hex = digest.hex();
        self.key(&format!(
            "{NAMES}/{}/{}/{hex}",
            digest.algorithm().name(),
            &hex[..2]
        ))
    }

    /// The object holding `digest`'s bytes and its size: distribution's key, else an object
    /// named for it; `None` when the blob is absent.
    async fn locate(&self, digest: &Digest) -> Result<Option<(Key, u64)>, StoreError> {
        if let Some(named) = self.inner.named.get(digest).await {
            match self.inner.store.head(&named).await {
                Ok(meta) => return Ok(Some((named, meta.size))),
                Err(e) if not_found(&e) => self.inner.named.invalidate(digest).await,
                Err(e) => return Err(s3_err(e)),
            }
        }
        let key = self.blob_key(digest);
        match self.inner.store.head(&key).await {
            Ok(meta) => {
                self.inner.named.insert(digest.clone(), key.clone()).await;
                return Ok(Some((key, meta.size)));
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(s3_err(e)),
        }
        for id in self.names(digest).await? {
            let object = self.object_key(&id);
            match self.inner.store.head(&object).await {
                Ok(meta) => {
                    self.inner
                        .named
                        .insert(digest.clone(), object.clone())
                        .await;
                    return Ok(Some((object, meta.size)));
                }
                // Being deleted, or its object was never completed: try the next name.
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(s3_err(e)),
            }
        }
        Ok(None)
    }

    /// Every object under `prefix`.
    async fn list_all(&self, prefix: &Key) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        self.inner
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(s3_err)
    }

    /// The sessions whose objects are named for `digest` (usually none or one; two replicas
    /// finishing pushes of the same bytes at once may leave two, both whole).
    async fn names(&self, digest: &Digest) -> Result<Vec<String>, StoreError> {
        let prefix = self.names_prefix(digest);
        let listed = self.list_all(&prefix).await?;
        Ok(listed
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_owned))
            .collect())
    }

    /// Makes the completed, verified object of session `id` the blob `digest`: names it, or
    /// deletes it when the blob is there already (the same bytes).
    pub(super) async fn adopt(&self, id: &str, digest: &Digest) -> Result<(), StoreError> {
        let object = self.object_key(id);
        if let Some((at, _)) = self.locate(digest).await? {
            // Another copy holds these bytes: this one goes. Unless it is this very object
            // (a final PUT retried after its name was written).
            if at != object {
                self.remove_object(&object).await?;
            }
            return Ok(());
        }
        let name = Key::from(format!("{}/{id}", self.names_prefix(digest)));
        self.inner
            .store
            .put(&name, PutPayload::default())
            .await
            .map_err(s3_err)?;
        self.inner.named.insert(digest.clone(), object).await;
        Ok(())
    }

    /// Deletes the object at `key`; one already gone is no error.
    async fn remove_object(&self, key: &Key) -> Result<(), StoreError> {
        match self.inner.store.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// Blobs kept as named objects: digest, size, and when the name was written (ms).
    pub(super) async fn named_blobs(&self) -> Result<Vec<(Digest, u64, u64)>, StoreError> {
        let (names, objects) = self.names_and_objects().await?;
        Ok(names
            .into_iter()
            .filter_map(|(digest, id, modified)| {
                let (size, _) = objects.get(&id)?;
                Some((digest, *size, modified))
            })
            .collect())
    }

    /// Objects of pushed blobs that no name points at, with their session and when they were
    /// written (ms): a crash between completing one and naming it, a delete cut off between
    /// the two — or a push being finished right now, while its session is still there.
    pub async fn orphans(&self) -> Result<Vec<(String, BucketKey, u64)>, StoreError> {
        let (names, objects) = self.names_and_objects().await?;
        let named: std::collections::HashSet<String> =
            names.into_iter().map(|(_, id, _)| id).collect();
        Ok(objects
            .into_iter()
            .filter(|(id, _)| !named.contains(id))
            .map(|(id, (_, modified))| {
                let key = BucketKey::new(format!("{OBJECTS}/{id}"));
                (id, key, modified)
            })
            .collect())
    }

    /// Every name (digest, session, written ms), and every object (session → size, written
    /// ms). Objects are listed after names: an object completed and named in between looks
    /// unnamed here; the maintenance job spares objects whose session is still there.
    async fn names_and_objects(
        &self,
    ) -> Result<
        (
            Vec<(Digest, String, u64)>,
            std::collections::HashMap<String, (u64, u64)>,
        ),
        StoreError,
    > {
        let mut names = Vec::new();
        let prefix = self.key(NAMES);
        let listed = self.list_all(&prefix).await?;
        for meta in listed {
            let Some(rest) = meta.location.prefix_match(&prefix) else {
                continue;
            };
            let parts: Vec<String> = rest.map(|p| p.as_ref().to_owned()).collect();
            // <algorithm>/<2 hex>/<hex>/<session>
            if let [algorithm, _, hex, id] = parts.as_slice()
                && Algorithm::ALL.iter().any(|a| a.name() == algorithm)
                && let Ok(d) = Digest::parse(&format!("{algorithm}:{hex}"))
            {
                names.push((d, id.clone(), modified_ms(&meta)));
            }
        }
        let mut objects = std::collections::HashMap::new();
        let prefix = self.key(OBJECTS);
        let listed = self.list_all(&prefix).await?;
        for meta in listed {
            if let Some(id) = meta.location.filename() {
                objects.insert(id.to_owned(), (meta.size, modified_ms(&meta)));
            }
        }
        Ok((names, objects))
    }

    fn markers(&self) -> Key {
        self.key("stevedore/multipart")
    }

    /// Checks that the bucket answers (a listing of one key), for start-up.
    pub async fn check(&self) -> Result<(), StoreError> {
        let mut list = self.inner.store.list(Some(&self.blobs_prefix()));
        match list.next().await {
            Some(Err(e)) => Err(s3_err(e)),
            _ => Ok(()),
        }
    }

    /// A URL that lets its holder GET the blob for `ttl`, without credentials.
    pub async fn presign(&self, digest: &Digest, ttl: Duration) -> Result<String, StoreError> {
        // Where the blob was found last (a request answered just before found it): signing
        // needs no request then.
        let key = match self.inner.named.get(digest).await {
            Some(key) => key,
            None => match self.locate(digest).await? {
                Some((key, _)) => key,
                None => self.blob_key(digest),
            },
        };
        let url = self
            .inner
            .store
            .signed_url(::http::Method::GET, &key, ttl)
            .await
            .map_err(s3_err)?;
        Ok(url.to_string())
    }

    /// Aborts the multipart uploads a killed run of this node left, and those of any node
    /// older than a day; how many were aborted.
    pub async fn abort_stale_uploads(&self) -> Result<usize, StoreError> {
        let mine = Key::from(format!("{}/{}", self.markers(), self.inner.node));
        let markers = self.list_all(&self.markers()).await?;
        let now = crate::clock::now_ms();
        let mut aborted = 0;
        for m in markers {
            let modified = u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0);
            let age = Duration::from_millis(now.saturating_sub(modified));
            if !m.location.prefix_matches(&mine) && age < STALE_UPLOAD_AGE {
                continue;
            }
            let body = match self.inner.store.get(&m.location).await {
                Ok(r) => r.bytes().await.map_err(s3_err)?,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(s3_err(e)),
            };
            let Ok(marker) = serde_json::from_slice::<Marker>(&body) else {
                tracing::warn!(marker = %m.location, "unreadable multipart marker: removed");
                self.forget_marker(&m.location).await;
                continue;
            };
            let key = Key::from(marker.key.as_str());
            match self.inner.store.abort_multipart(&key, &marker.id).await {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "aborting a stale multipart upload failed");
                    continue;
                }
            }
            tracing::info!(key = %key, "aborted a multipart upload an earlier run left");
            self.forget_marker(&m.location).await;
            aborted += 1;
        }
        Ok(aborted)
    }

    async fn forget_marker(&self, marker: &Key) {
        if let Err(e) = self.inner.store.delete(marker).await
            && !not_found(&e)
        {
            tracing::warn!(marker = %marker, error = %e, "removing a multipart marker failed");
        }
    }

    /// Uploads the staged file of `blob` to `key` in `chunksize` parts.
    async fn upload_parts(&self, blob: &Verified, key: &Key) -> Result<(), StoreError> {
        let mut sent = self.start_multipart(key).await?;
        match self.send_parts(blob, key, &sent.id).await {
            Ok(parts) => {
                sent.parts = parts;
                self.complete_sent(sent).await
            }
            Err(e) => {
                self.abort(&mut sent).await;
                Err(e)
            }
        }
    }

    async fn send_parts(
        &self,
        blob: &Verified,
        key: &Key,
        id: &object_store::MultipartId,
    ) -> Result<Vec<PartId>, StoreError> {
        let file = Arc::new(std::fs::File::open(blob.path())?);
        let (len, part) = (blob.len(), self.inner.chunk_size);
        let count = len.div_ceil(part).max(1);
        futures::stream::iter(0..count)
            .map(|i| {
                let file = file.clone();
                async move {
                    let start = i * part;
                    let want = (len - start).min(part) as usize;
                    let data =
                        tokio::task::spawn_blocking(move || super::read_at(&file, start, want))
                            .await
                            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
                    if data.len() != want {
                        return Err(StoreError::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "staged blob is shorter than written",
                        )));
                    }
                    self.inner
                        .store
                        .put_part(key, id, i as usize, PutPayload::from(data))
                        .await
                        .map_err(s3_err)
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await
    }
}

/// A multipart upload under way, as recorded in the bucket.
#[derive(serde::Serialize, serde::Deserialize)]
struct Marker {
    key: String,
    id: String,
}

/// This node's name, generated once and kept in `<local>/node-id`.
async fn node_name(local: &Path) -> Result<String, StoreError> {
    let path = local.join("node-id");
    match tokio::fs::read_to_string(&path).await {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    tokio::fs::create_dir_all(local).await?;
    let name = uuid::Uuid::new_v4().simple().to_string();
    let tmp = local.join("node-id.tmp");
    tokio::fs::write(&tmp, &name).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(name)
}

/// Ranged GETs of one object.
struct ObjectRanges {
    store: AmazonS3,
    key: Key,
}

impl RangeSource for ObjectRanges {
    fn range(self: Box<Self>, start: u64, len: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
        if len == 0 {
            return futures::stream::empty().boxed();
        }
        let ObjectRanges { store, key } = *self;
        let body = futures::stream::once(async move {
            let opts = object_store::GetOptions {
                range: Some((start..start + len).into()),
                ..Default::default()
            };
            store
                .get_opts(&key, opts)
                .await
                .map(|r| r.into_stream().map_err(std::io::Error::other))
                .map_err(std::io::Error::other)
        })
        .try_flatten();
        exactly(body, len).boxed()
    }
}

/// `body`, ended with an error if it brings fewer or more than `len` bytes.
fn exactly(
    body: impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    len: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let mut seen = 0u64;
    body.map(Some)
        .chain(futures::stream::once(async { None }))
        .filter_map(move |item| {
            let out = match item {
                Some(Ok(chunk)) => {
                    seen += chunk.len() as u64;
                    if seen > len {
                        Some(Err(std::io::Error::other(
                            "object store sent more than asked",
                        )))
                    } else {
                        Some(Ok(chunk))
                    }
                }
                Some(Err(e)) => Some(Err(e)),
                None if seen < len => Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("object ended after {seen} of {len} bytes"),
                ))),
                None => None,
            };
            futures::future::ready(out)
        })
}

impl BlobBackend for S3Backend {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self.locate(digest).await?.map(|(_, size)| size))
    }

    async fn open(&self, digest: &Digest) -> Result<Option<(BlobRead, u64)>, StoreError> {
        let Some((key, size)) = self.locate(digest).await? else {
            return Ok(None);
        };
        let source = ObjectRanges {
            store: self.inner.store.clone(),
            key,
        };
        Ok(Some((BlobRead::Remote(Box::new(source)), size)))
    }

    async fn commit(&self, mut blob: Verified) -> Result<(), StoreError> {
        // Parts sent while the blob was staged (`early.rs`): complete them. If that upload
        // failed, the staged file is still whole: upload it as if it had not been followed.
        let sent = match blob.take_early() {
            Some(early) => match early.finish(blob.len()).await {
                Ok(sent) => sent,
                Err(e) => {
                    tracing::warn!(digest = %blob.digest(), error = %e, "the upload that followed the staged blob failed; uploading it again");
                    None
                }
            },
            None => None,
        };
        if let Some(sent) = &sent {
            debug_assert_eq!(sent.key, self.blob_key(blob.digest()));
        }
        // A blob already there has these very bytes: keep it (the staged copy goes with
        // `blob`).
        if self.stat(blob.digest()).await?.is_some() {
            if let Some(mut sent) = sent {
                self.abort(&mut sent).await;
            }
            return Ok(());
        }
        if let Some(sent) = sent {
            return self.complete_sent(sent).await;
        }
        let key = self.blob_key(blob.digest());
        if blob.len() > self.inner.chunk_size {
            return self.upload_parts(&blob, &key).await;
        }
        let file = std::fs::File::open(blob.path())?;
        let len = blob.len() as usize;
        let data = tokio::task::spawn_blocking(move || super::read_at(&file, 0, len))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        if data.len() != len {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "staged blob is shorter than written",
            )));
        }
        let opts = PutOptions {
            attributes: self.inner.attributes.clone(),
            ..Default::default()
        };
        self.inner
            .store
            .put_opts(&key, PutPayload::from(data), opts)
            .await
            .map_err(s3_err)?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let mut deleted = false;
        let key = self.blob_key(digest);
        match self.inner.store.head(&key).await {
            Ok(_) => {
                self.remove_object(&key).await?;
                deleted = true;
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(s3_err(e)),
        }
        // Each name before its object: a crash in between leaves an orphan, never a name
        // pointing at nothing.
        self.inner.named.invalidate(digest).await;
        for id in self.names(digest).await? {
            let name = Key::from(format!("{}/{id}", self.names_prefix(digest)));
            self.remove_object(&name).await?;
            self.remove_object(&self.object_key(&id)).await?;
            deleted = true;
        }
        Ok(deleted)
    }

    async fn list(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let prefix = self.blobs_prefix();
        let mut objects = self.inner.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(s3_err)?;
            let Some(rest) = meta.location.prefix_match(&prefix) else {
                continue;
            };
            let parts: Vec<String> = rest.map(|p| p.as_ref().to_owned()).collect();
            // <algorithm>/<2 hex>/<hex>/data
            if let [algorithm, _, hex, data] = parts.as_slice()
                && data == "data"
                && Algorithm::ALL.iter().any(|a| a.name() == algorithm)
                && let Ok(d) = Digest::parse(&format!("{algorithm}:{hex}"))
            {
                out.push((d, meta.size));
            }
        }
        let at_layout: std::collections::HashSet<Digest> =
            out.iter().map(|(d, _)| d.clone()).collect();
        for (d, size, _) in self.named_blobs().await? {
            if !at_layout.contains(&d) {
                out.push((d, size));
            }
        }
        Ok(out)
    }

    async fn quarantine(&self, digest: &Digest) -> Result<bool, StoreError> {
        let Some((from, _)) = self.locate(digest).await? else {
            return Ok(false);
        };
        let to = self.key(&format!(
            "stevedore/quarantine/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ));
        // Bytes that do not match their name are rare: kept for an operator as a copy.
        match self.inner.store.copy(&from, &to).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(false),
            Err(e) => return Err(s3_err(e)),
        }
        self.delete(digest).await?;
        Ok(true)
    }
}
