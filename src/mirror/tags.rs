//! Tag lists of proxied repositories: the upstream's whole list (cached for `proxy.tagttl`)
//! merged with the tags pushed or cached here, then paged with `last`/`n` like a local list.
//! When the upstream cannot give its list, the local tags are answered alone, marked so.

use super::{Mirror, ProxyRepo};
use crate::error::RegistryError;
use crate::upstream::UpstreamError;
use std::collections::BTreeSet;
use std::sync::Arc;

type Result<T> = std::result::Result<T, RegistryError>;

/// A page of a proxied repository's tags.
pub struct TagPage {
    /// Up to `n` tags after `last`, in lexical order.
    pub tags: Vec<String>,
    /// True when the upstream's list could not be had: only local tags are listed.
    pub local_only: bool,
}

/// Upstream tag lists by local repository name.
pub(super) type TagLists = super::lists::UpstreamLists<Vec<String>>;

impl Mirror {
    /// Tags of a proxied repository: the upstream's merged with local ones, up to `n` after
    /// `last`. NAME_UNKNOWN when neither side knows the repository; the upstream's error when
    /// it cannot be asked and nothing is known here.
    pub async fn list_tags(&self, p: &ProxyRepo, last: Option<&str>, n: usize) -> Result<TagPage> {
        let local = self
            .registry
            .list_tags(&p.local, None, usize::MAX)
            .await?
            .unwrap_or_default();
        let (upstream, local_only) = match self.upstream_tags(p).await {
            Ok(list) => (list, false),
            Err(UpstreamError::NotFound) if !local.is_empty() => (Arc::default(), false),
            Err(UpstreamError::NotFound) => return Err(RegistryError::name_unknown(&p.local)),
            Err(e) if !local.is_empty() => {
                tracing::info!(
                    upstream = p.upstream.name,
                    repo = %p.local,
                    error = %e,
                    "upstream tag list unavailable: listing local tags only"
                );
                (Arc::default(), true)
            }
            Err(e) => return Err(e.into()),
        };
        let merged: BTreeSet<&String> = upstream.iter().chain(local.iter()).collect();
        let tags = merged
            .into_iter()
            .filter(|t| last.is_none_or(|l| t.as_str() > l))
            .take(n)
            .cloned()
            .collect();
        Ok(TagPage { tags, local_only })
    }

    /// The upstream's whole tag list, from the cache while younger than `proxy.tagttl`.
    async fn upstream_tags(
        &self,
        p: &ProxyRepo,
    ) -> std::result::Result<Arc<Vec<String>>, UpstreamError> {
        let ttl = self.options.tag_ttl;
        let key = p.local.as_str().to_owned();
        if let Some((age, list)) = self.tag_lists.get(&key)
            && age < ttl
        {
            return Ok(list);
        }
        let list = Arc::new(p.upstream.client.all_tags(&p.remote).await?);
        if !ttl.is_zero() {
            self.tag_lists.insert(key, list.clone(), ttl);
        }
        Ok(list)
    }
}
