//! Media types of manifests and the `Accept` negotiation rules.

pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const OCI_NONDISTRIBUTABLE_PREFIX: &str = "application/vnd.oci.image.layer.nondistributable.";

/// Every manifest media type stevedore stores and serves.
pub const MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
];

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

pub fn is_manifest_type(media_type: &str) -> bool {
    MANIFEST_TYPES.contains(&media_type)
}

/// The media types listed in `Accept` headers (each may hold a comma-separated list with
/// parameters), lowercased, in order.
pub fn accepted<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    headers
        .into_iter()
        .flat_map(|h| h.split(','))
        .filter_map(|item| {
            let t = item.split(';').next()?.trim().to_ascii_lowercase();
            (!t.is_empty()).then_some(t)
        })
        .collect()
}

/// Whether a stored manifest of `media_type` may be served to a client that sent `accept`.
///
/// Registries serve what they have and leave the choice to the client, except that a client that
/// names manifest types but not an index type is not handed an index it cannot read (that is how
/// old Docker clients that only know schema2 ask for the platform manifest). An empty list,
/// `*/*`, or a list that names no manifest type at all accepts anything.
pub fn acceptable(media_type: &str, accept: &[String]) -> bool {
    let names_any_manifest = accept
        .iter()
        .any(|a| is_manifest_type(a) || a == DOCKER_MANIFEST_V1 || a == DOCKER_MANIFEST_V1_SIGNED);
    if accept.is_empty() || !names_any_manifest || accept.iter().any(|a| a == "*/*") {
        return true;
    }
    if !is_index(media_type) {
        return true;
    }
    accept.iter().any(|a| a == media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists() {
        let a = accepted([
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json;q=0.9",
            "*/*",
        ]);
        assert_eq!(a, vec![OCI_MANIFEST, DOCKER_MANIFEST_V2, "*/*"]);
    }

    #[test]
    fn index_needs_to_be_asked_for() {
        let only_v2 = vec![DOCKER_MANIFEST_V2.to_owned()];
        assert!(!acceptable(OCI_INDEX, &only_v2));
        assert!(acceptable(DOCKER_MANIFEST_V2, &only_v2));
        assert!(acceptable(OCI_INDEX, &[]));
        let with_list = vec![
            DOCKER_MANIFEST_V2.to_owned(),
            DOCKER_MANIFEST_LIST.to_owned(),
        ];
        assert!(acceptable(DOCKER_MANIFEST_LIST, &with_list));
        assert!(!acceptable(OCI_INDEX, &with_list));
    }
}
