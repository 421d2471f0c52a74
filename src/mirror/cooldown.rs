//! Cooldown (`proxy.cooldown`, per upstream `proxy.upstreams[].cooldown`): a minimum age for
//! what an upstream tag names before the mirror serves it, against freshly pushed malicious
//! tags. When the upstream names a digest for a tag that differs from the one served, and that
//! digest is younger than the cooldown, the tag keeps its previous digest; with none to keep,
//! the request is refused (403 DENIED, saying when the digest becomes servable).
//!
//! Age is measured from when this mirror first saw the upstream name that digest for the tag
//! (recorded in the index's tag notes). The image config's `created` is not used: whoever
//! pushes the image writes it (reproducible builds set it to 1970; an attacker would set it to
//! last year), so it proves nothing; the mirror's own first sighting is the only age it can
//! vouch for. A mirror that has never seen a tag therefore waits a full cooldown for it (a
//! warm list run starts the clock early). Pulls by digest are not held: a digest names content
//! the puller chose.

use super::ProxyRepo;
use crate::clock::now_secs;
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Metrics;
use crate::oci::{Digest, Tag};
use crate::registry::Registry;

/// What to do with a digest the upstream names for a tag.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Old enough (or no cooldown): serve it.
    Admit,
    /// Too young: keep serving the tag's previous digest.
    Hold,
}

/// Decides on `named`, which the upstream now names for `tag`; `held` says whether the
/// mirror has a previous digest of the tag to serve instead. A refusal is the error.
pub(super) fn check(
    registry: &Registry,
    metrics: &Metrics,
    p: &ProxyRepo,
    tag: &Tag,
    named: &Digest,
    held: Option<&Digest>,
) -> Result<Verdict, RegistryError> {
    let cooldown = p.upstream.cooldown;
    if cooldown.is_zero() || held == Some(named) {
        return Ok(Verdict::Admit);
    }
    let up = p.upstream.name.as_str();
    let t = now_secs();
    let first = registry.update_tag_notes(&p.local, tag, |n| n.first_seen(named, t))?;
    let until = first.saturating_add(cooldown.as_secs());
    let decision = |d: &str| {
        metrics.cooldown_decisions.with_label_values(&[up, d]).inc();
    };
    if t >= until {
        decision("admitted");
        if first != t {
            tracing::info!(repo = %p.local, %tag, upstream = up, digest = %named, first_seen = first, "cooldown: the tag's new digest is old enough; serving it");
        }
        return Ok(Verdict::Admit);
    }
    match held {
        Some(ours) => {
            decision("held");
            tracing::info!(repo = %p.local, %tag, upstream = up, digest = %named, serving = %ours, first_seen = first, servable_from = until, "cooldown: the upstream tag moved to a digest younger than proxy.cooldown; serving the previous one");
            Ok(Verdict::Hold)
        }
        None => {
            decision("refused");
            tracing::info!(repo = %p.local, %tag, upstream = up, digest = %named, first_seen = first, servable_from = until, "cooldown: refused, the tag's digest is younger than proxy.cooldown and no earlier one is cached");
            Err(RegistryError::new(
                ErrorCode::Denied,
                format!(
                    "{}:{tag} names {named}, which this mirror first saw {} s ago; the cooldown of {} s (proxy.cooldown) lets it be pulled in {} s, and no earlier digest of the tag is cached (a pull by digest is not held)",
                    p.local,
                    t - first,
                    cooldown.as_secs(),
                    until - t,
                ),
            ))
        }
    }
}
