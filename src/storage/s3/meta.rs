//! Small objects of the bucket beside the blobs: the link files, tags and markers that
//! `storage::SharedMeta` lays out (distribution's `repositories/` tree and stevedore's
//! `cached/` markers). Addressed by key below the root directory; no layout is known here.
//! Must not: touch blob data, or list more than the one directory asked for.

use super::{S3Backend, not_found, s3_err};
use crate::storage::StoreError;
use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

impl S3Backend {
    /// An object's bytes and when it was last written (seconds since the epoch); `None` when
    /// absent.
    pub(in crate::storage) async fn read_small_object(
        &self,
        rest: &str,
    ) -> Result<Option<(Bytes, u64)>, StoreError> {
        match self.inner.store.get(&self.key(rest)).await {
            Ok(r) => {
                let modified = u64::try_from(r.meta.last_modified.timestamp()).unwrap_or(0);
                Ok(Some((r.bytes().await.map_err(s3_err)?, modified)))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// Whether an object exists (a HEAD).
    pub(in crate::storage) async fn object_exists(&self, rest: &str) -> Result<bool, StoreError> {
        match self.inner.store.head(&self.key(rest)).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// Writes a small object whole (one PUT: it is there entirely or not at all).
    pub(in crate::storage) async fn write_small_object(
        &self,
        rest: &str,
        body: Bytes,
    ) -> Result<(), StoreError> {
        let opts = PutOptions {
            attributes: self.inner.attributes.clone(),
            ..Default::default()
        };
        self.inner
            .store
            .put_opts(&self.key(rest), PutPayload::from(body), opts)
            .await
            .map(|_| ())
            .map_err(s3_err)
    }

    /// Deletes an object; deleting an absent one is no error.
    pub(in crate::storage) async fn delete_object(&self, rest: &str) -> Result<(), StoreError> {
        self.remove_object(&self.key(rest)).await
    }

    /// The names of the directories and of the objects right under `rest` (one delimited
    /// listing, every page of it).
    pub(in crate::storage) async fn list_dir(
        &self,
        rest: &str,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let prefix = self.key(rest);
        let listed = self
            .inner
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(s3_err)?;
        let last = |k: &Key| k.filename().map(str::to_owned);
        Ok((
            listed.common_prefixes.iter().filter_map(last).collect(),
            listed
                .objects
                .iter()
                .filter_map(|o| last(&o.location))
                .collect(),
        ))
    }

    /// Every object below `rest`, as keys relative to `rest` (for removing a small subtree:
    /// one tag's links).
    pub(in crate::storage) async fn list_below(
        &self,
        rest: &str,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = self.key(rest);
        let objects = self.list_all(&prefix).await?;
        Ok(objects
            .iter()
            .filter_map(|o| {
                let parts: Vec<String> = o
                    .location
                    .prefix_match(&prefix)?
                    .map(|p| p.as_ref().to_owned())
                    .collect();
                Some(parts.join("/"))
            })
            .collect())
    }
}
