//! The referrers of a manifest as the upstream lists them: `GET /v2/<repo>/referrers/<digest>`
//! (OCI Distribution 1.1), answered as an image index. Registries without the API answer 404
//! (distribution 2.8, older Docker Hub): the caller then falls back to the `sha256-<hex>` tag
//! scheme with [`UpstreamClient::get_manifest`]. Same path as every other call: offline
//! switch, breaker, slots.

use super::names::check_reference;
use super::{Call, Method, Op, UpstreamClient, UpstreamError, accept_header};
use bytes::Bytes;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl UpstreamClient {
    /// GET of the referrers index of `digest` in `repo`: the raw body (at most 4 MiB).
    /// `NotFound` when the upstream has no referrers API (or no such repository).
    pub async fn get_referrers(&self, repo: &str, digest: &str) -> Result<Bytes, UpstreamError> {
        check_reference(digest)?;
        if !digest.contains(':') {
            return Err(UpstreamError::Invalid(format!("bad digest {digest:?}")));
        }
        let upstream_repo = self.upstream_repo(repo)?;
        let call = Call {
            op: Op::Referrers,
            method: Method::GET,
            path: format!("/v2/{upstream_repo}/referrers/{digest}"),
            accept: accept_header(&[OCI_INDEX])?,
            repo,
        };
        let resp = self.inner.send(&call).await?;
        self.inner.read_capped(resp).await
    }
}
