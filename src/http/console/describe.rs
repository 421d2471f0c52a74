//! What the console shows of a stored manifest: its parsed JSON, total size, platforms and
//! creation time (from the image config), read from the local store only — never from an
//! upstream, and without counting as an access (eviction order is left alone).

use crate::App;
use crate::oci::Digest;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use serde_json::Value;

/// A stored manifest, as far as the pages need it.
#[derive(Debug, Default)]
pub struct Described {
    pub json: Value,
    /// Manifest + config + layers, for an image; the manifest alone for an index.
    pub size: u64,
    pub platforms: Vec<String>,
    pub created: Option<String>,
    pub is_index: bool,
}

/// A JSON blob (manifest or config) from the local store, if there and parseable.
pub async fn stored_json(app: &App, d: &Digest) -> Option<Value> {
    let bytes = app
        .depot
        .store
        .read_small(d, MAX_MANIFEST_BYTES as u64)
        .await
        .ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// `os/arch[/variant]` of a platform object.
pub fn platform_text(p: &Value) -> Option<String> {
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(Value::as_str) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

pub fn descriptor_size(v: &Value) -> u64 {
    v.get("size").and_then(Value::as_u64).unwrap_or(0)
}

/// Reads and describes manifest `d` of size `manifest_size`; `None` when its bytes are not
/// in the store (or are not JSON).
pub async fn describe(app: &App, d: &Digest, manifest_size: u64) -> Option<Described> {
    let json = stored_json(app, d).await?;
    let mut out = Described {
        size: manifest_size,
        ..Described::default()
    };
    if let Some(children) = json.get("manifests").and_then(Value::as_array) {
        out.is_index = true;
        out.platforms = children
            .iter()
            .filter_map(|c| c.get("platform").and_then(platform_text))
            .filter(|p| p != "unknown/unknown")
            .collect();
    } else {
        let config = json.get("config");
        out.size += config.map(descriptor_size).unwrap_or(0);
        out.size += json
            .get("layers")
            .and_then(Value::as_array)
            .map(|ls| ls.iter().map(descriptor_size).sum::<u64>())
            .unwrap_or(0);
        let config_digest = config
            .and_then(|c| c.get("digest"))
            .and_then(Value::as_str)
            .and_then(|s| Digest::parse(s).ok());
        if let Some(cd) = config_digest
            && let Some(cfg) = stored_json(app, &cd).await
        {
            out.platforms.extend(platform_text(&cfg));
            out.created = cfg
                .get("created")
                .and_then(Value::as_str)
                .map(|s| s.chars().take(19).collect::<String>().replace('T', " "));
        }
    }
    out.json = json;
    Some(out)
}
