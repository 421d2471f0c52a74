//! Manifest endpoints for every manifest type stevedore stores: PUT by tag and by digest,
//! GET/HEAD by both, byte-exact storage, Accept negotiation, DELETE, manifest errors, and the
//! referrers API.

use crate::common::api::*;
use crate::common::*;
use serde_json::{Value, json};

const ALL_MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Asserts GET and HEAD of `reference` in `repo` serve exactly `body` as `media_type`.
async fn assert_manifest(s: &Server, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let url = s.url(&format!("/v2/{repo}/manifests/{reference}"));
    let d = digest(body);
    let r = get(&url, Some(ALL_MANIFEST_TYPES)).await;
    assert_eq!(r.status(), 200, "GET {reference}");
    assert_eq!(header(&r, "content-type").as_deref(), Some(media_type));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(header(&r, "content-length"), Some(body.len().to_string()));
    assert_eq!(r.bytes().await.unwrap().as_ref(), body, "byte-exact");

    let r = head(&url, Some(ALL_MANIFEST_TYPES)).await;
    assert_eq!(r.status(), 200, "HEAD {reference}");
    assert_eq!(header(&r, "content-type").as_deref(), Some(media_type));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(header(&r, "content-length"), Some(body.len().to_string()));
    assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn every_manifest_type_round_trips_byte_exact() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/types";
    let (oci, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 2, 30).await;
    let (docker, _, _) = push_image_blobs(&base, repo, DOCKER_MANIFEST, 2, 31).await;
    // Pretty-printed with unusual spacing: stored and served as sent, not re-serialised.
    let oci = String::from_utf8(oci)
        .unwrap()
        .replace("\n", "\n\t  ")
        .into_bytes();
    let oci_d = put_manifest_ok(&base, repo, "oci", OCI_MANIFEST, &oci).await;
    let docker_d = put_manifest_ok(&base, repo, "docker", DOCKER_MANIFEST, &docker).await;

    let index = index_body(
        OCI_INDEX,
        &[
            (OCI_MANIFEST, &oci_d, oci.len()),
            (DOCKER_MANIFEST, &docker_d, docker.len()),
        ],
    );
    let list = index_body(
        DOCKER_LIST,
        &[
            (DOCKER_MANIFEST, &docker_d, docker.len()),
            (OCI_MANIFEST, &oci_d, oci.len()),
        ],
    );
    let index_d = put_manifest_ok(&base, repo, "index", OCI_INDEX, &index).await;
    let list_d = put_manifest_ok(&base, repo, "list", DOCKER_LIST, &list).await;

    for (tag, d, mt, body) in [
        ("oci", &oci_d, OCI_MANIFEST, &oci),
        ("docker", &docker_d, DOCKER_MANIFEST, &docker),
        ("index", &index_d, OCI_INDEX, &index),
        ("list", &list_d, DOCKER_LIST, &list),
    ] {
        assert_manifest(&s, repo, tag, mt, body).await;
        assert_manifest(&s, repo, d, mt, body).await;
    }
}

#[tokio::test]
async fn media_type_comes_from_body_when_content_type_is_generic() {
    let s = Server::start();
    let base = s.url("");
    let (docker, _, _) = push_image_blobs(&base, "mf/generic", DOCKER_MANIFEST, 1, 32).await;
    put_manifest_ok(&base, "mf/generic", "t", "application/json", &docker).await;
    assert_manifest(&s, "mf/generic", "t", DOCKER_MANIFEST, &docker).await;

    // An OCI manifest without mediaType, pushed with its Content-Type.
    let (oci, _, _) = push_image_blobs(&base, "mf/generic", OCI_MANIFEST, 1, 33).await;
    let mut v: Value = serde_json::from_slice(&oci).unwrap();
    v.as_object_mut().unwrap().remove("mediaType");
    let bare = serde_json::to_vec(&v).unwrap();
    put_manifest_ok(&base, "mf/generic", "bare", OCI_MANIFEST, &bare).await;
    assert_manifest(&s, "mf/generic", "bare", OCI_MANIFEST, &bare).await;
}

#[tokio::test]
async fn put_by_digest_is_untagged() {
    let s = Server::start();
    let base = s.url("");
    let (m, _, _) = push_image_blobs(&base, "mf/bydigest", OCI_MANIFEST, 1, 34).await;
    let d = digest(&m);
    put_manifest_ok(&base, "mf/bydigest", &d, OCI_MANIFEST, &m).await;
    assert_manifest(&s, "mf/bydigest", &d, OCI_MANIFEST, &m).await;
    let r = get(&s.url("/v2/mf/bydigest/tags/list"), None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!([]));

    // Pushing to a digest that is not the body's is refused, and stores nothing.
    let (other, _, _) = push_image_blobs(&base, "mf/bydigest", OCI_MANIFEST, 1, 35).await;
    let r = put_manifest(&base, "mf/bydigest", &d, OCI_MANIFEST, &other).await;
    expect_error(r, 400, "DIGEST_INVALID").await;
    let r = get(
        &s.url(&format!("/v2/mf/bydigest/manifests/{}", digest(&other))),
        None,
    )
    .await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    assert_manifest(&s, "mf/bydigest", &d, OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn a_tag_moves_to_the_last_manifest_pushed() {
    let s = Server::start();
    let base = s.url("");
    let (a, _, _) = push_image_blobs(&base, "mf/move", OCI_MANIFEST, 1, 36).await;
    let (b, _, _) = push_image_blobs(&base, "mf/move", OCI_MANIFEST, 1, 37).await;
    put_manifest_ok(&base, "mf/move", "t", OCI_MANIFEST, &a).await;
    assert_manifest(&s, "mf/move", "t", OCI_MANIFEST, &a).await;
    put_manifest_ok(&base, "mf/move", "t", OCI_MANIFEST, &b).await;
    assert_manifest(&s, "mf/move", "t", OCI_MANIFEST, &b).await;
    // The old manifest is still there by digest.
    assert_manifest(&s, "mf/move", &digest(&a), OCI_MANIFEST, &a).await;
}

#[tokio::test]
async fn an_index_is_not_served_to_a_client_that_does_not_accept_it() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/accept";
    let (m, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 38).await;
    let md = put_manifest_ok(&base, repo, "single", OCI_MANIFEST, &m).await;
    let index = index_body(OCI_INDEX, &[(OCI_MANIFEST, &md, m.len())]);
    let id = put_manifest_ok(&base, repo, "multi", OCI_INDEX, &index).await;
    let list = index_body(DOCKER_LIST, &[(OCI_MANIFEST, &md, m.len())]);
    put_manifest_ok(&base, repo, "list", DOCKER_LIST, &list).await;

    let only_images = format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}");
    for reference in ["multi", id.as_str()] {
        let url = s.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = get(&url, Some(&only_images)).await;
        expect_error(r, 404, "MANIFEST_UNKNOWN").await;
        assert_eq!(head(&url, Some(&only_images)).await.status(), 404);
        // Accepting it (alone, among others, or with parameters), or anything: served.
        for accept in [
            Some(OCI_INDEX.to_owned()),
            Some(format!("{DOCKER_MANIFEST}, {OCI_INDEX};q=0.5")),
            Some("*/*".to_owned()),
            None,
        ] {
            let r = get(&url, accept.as_deref()).await;
            assert_eq!(r.status(), 200, "{accept:?}");
            assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
            assert_eq!(r.bytes().await.unwrap().as_ref(), index.as_slice());
        }
    }
    // Several Accept headers count together.
    let r = client()
        .get(s.url(&format!("/v2/{repo}/manifests/multi")))
        .header("accept", DOCKER_MANIFEST)
        .header("accept", OCI_INDEX)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A Docker manifest list needs its own type.
    let url = s.url(&format!("/v2/{repo}/manifests/list"));
    expect_error(get(&url, Some(&only_images)).await, 404, "MANIFEST_UNKNOWN").await;
    let r = get(&url, Some(&format!("{DOCKER_MANIFEST}, {DOCKER_LIST}"))).await;
    assert_eq!(r.status(), 200);
    // An image manifest is served whatever manifest type is asked for.
    let r = get(
        &s.url(&format!("/v2/{repo}/manifests/single")),
        Some(DOCKER_MANIFEST),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));
}

#[tokio::test]
async fn delete_manifest_by_digest_and_by_tag() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/delete";
    let (m, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 39).await;
    let d = put_manifest_ok(&base, repo, "a", OCI_MANIFEST, &m).await;
    put_manifest_ok(&base, repo, "b", OCI_MANIFEST, &m).await;
    let (other, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 40).await;
    let od = put_manifest_ok(&base, repo, "c", OCI_MANIFEST, &other).await;
    // Warm caches.
    assert_manifest(&s, repo, &d, OCI_MANIFEST, &m).await;

    // By tag: only the tag goes.
    let r = send(client().delete(s.url(&format!("/v2/{repo}/manifests/c")))).await;
    assert_eq!(r.status(), 202);
    expect_error(
        get(&s.url(&format!("/v2/{repo}/manifests/c")), None).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_manifest(&s, repo, &od, OCI_MANIFEST, &other).await;

    // By digest: the manifest and every tag pointing at it go.
    let url = s.url(&format!("/v2/{repo}/manifests/{d}"));
    let r = client().delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 202);
    for reference in [d.as_str(), "a", "b"] {
        let u = s.url(&format!("/v2/{repo}/manifests/{reference}"));
        expect_error(get(&u, None).await, 404, "MANIFEST_UNKNOWN").await;
        assert_eq!(head(&u, None).await.status(), 404);
    }
    let v: Value = get(&s.url(&format!("/v2/{repo}/tags/list")), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!([]));
    // Gone already: 404.
    let r = client().delete(&url).send().await.unwrap();
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    let r = send(client().delete(s.url(&format!("/v2/{repo}/manifests/a")))).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    // It can be pushed again.
    put_manifest_ok(&base, repo, "a", OCI_MANIFEST, &m).await;
    assert_manifest(&s, repo, "a", OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn invalid_manifests_are_refused_and_not_stored() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/invalid";
    let (good, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 41).await;
    let good_v: Value = serde_json::from_slice(&good).unwrap();

    let mut v1 = good_v.clone();
    v1["schemaVersion"] = json!(1);
    let mut no_version = good_v.clone();
    no_version.as_object_mut().unwrap().remove("schemaVersion");
    let mut no_config = good_v.clone();
    no_config.as_object_mut().unwrap().remove("config");
    let mut bad_layer_digest = good_v.clone();
    bad_layer_digest["layers"][0]["digest"] = json!("sha256:not-hex");
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("not json", OCI_MANIFEST, b"{\"schemaVersion\": 2,".to_vec()),
        ("not an object", OCI_MANIFEST, b"[1,2,3]".to_vec()),
        (
            "schemaVersion 1",
            OCI_MANIFEST,
            serde_json::to_vec(&v1).unwrap(),
        ),
        (
            "no schemaVersion",
            OCI_MANIFEST,
            serde_json::to_vec(&no_version).unwrap(),
        ),
        (
            "no config",
            OCI_MANIFEST,
            serde_json::to_vec(&no_config).unwrap(),
        ),
        (
            "bad descriptor digest",
            OCI_MANIFEST,
            serde_json::to_vec(&bad_layer_digest).unwrap(),
        ),
        // The body says OCI manifest, the header Docker schema2.
        ("media type mismatch", DOCKER_MANIFEST, good.clone()),
        // Schema 1 is not accepted.
        (
            "schema1",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            good.clone(),
        ),
    ];
    for (what, ctype, body) in &cases {
        let r = put_manifest(&base, repo, "t", ctype, body).await;
        let v = expect_error(r, 400, "MANIFEST_INVALID").await;
        assert!(
            v["errors"][0]["message"].as_str().unwrap().len() > 5,
            "{what}"
        );
        let r = get(
            &s.url(&format!("/v2/{repo}/manifests/{}", digest(body))),
            None,
        )
        .await;
        expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    }
    let r = get(&s.url(&format!("/v2/{repo}/manifests/t")), None).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    // The good one still goes in.
    put_manifest_ok(&base, repo, "t", OCI_MANIFEST, &good).await;
}

#[tokio::test]
async fn manifests_referencing_missing_content_are_refused() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/missing";
    let (good, config, layers) = push_image_blobs(&base, repo, OCI_MANIFEST, 2, 42).await;
    // A layer that was never pushed.
    let missing = random_bytes(100, 4242);
    let md = digest(&missing);
    let refs = [
        (digest(&layers[0]), layers[0].len()),
        (md.clone(), missing.len()),
    ];
    let refs: Vec<(&str, usize)> = refs.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let body = image_manifest(OCI_MANIFEST, (&digest(&config), config.len()), &refs);
    let r = put_manifest(&base, repo, "t", OCI_MANIFEST, &body).await;
    let v = expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(v["errors"][0]["detail"]["digest"], md.as_str());
    // A missing config.
    let body = image_manifest(OCI_MANIFEST, (&md, 100), &[]);
    let r = put_manifest(&base, repo, "t", OCI_MANIFEST, &body).await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;

    // An index whose child manifest is not in the repository.
    let child = digest(&good);
    let index = index_body(OCI_INDEX, &[(OCI_MANIFEST, &child, good.len())]);
    let r = put_manifest(&base, repo, "idx", OCI_INDEX, &index).await;
    let v = expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(v["errors"][0]["detail"]["digest"], child.as_str());
    // Nor a manifest pushed to another repository (blobs of its own are not manifests).
    let (other, _, _) = push_image_blobs(&base, "mf/elsewhere", OCI_MANIFEST, 1, 43).await;
    let od = put_manifest_ok(&base, "mf/elsewhere", "x", OCI_MANIFEST, &other).await;
    let index2 = index_body(OCI_INDEX, &[(OCI_MANIFEST, &od, other.len())]);
    let r = put_manifest(&base, repo, "idx", OCI_INDEX, &index2).await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let r = put_manifest(
        &base,
        repo,
        "idx",
        DOCKER_LIST,
        &index_body(DOCKER_LIST, &[(OCI_MANIFEST, &child, good.len())]),
    )
    .await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;

    for reference in ["t", "idx"] {
        let r = get(&s.url(&format!("/v2/{repo}/manifests/{reference}")), None).await;
        expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    }
    // Once the child is pushed the index goes in.
    put_manifest_ok(&base, repo, &child, OCI_MANIFEST, &good).await;
    put_manifest_ok(&base, repo, "idx", OCI_INDEX, &index).await;
}

#[tokio::test]
async fn oversized_manifest_is_refused_with_413() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/huge";
    let (good, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 44).await;
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["annotations"] = json!({ "pad": "x".repeat(4 * 1024 * 1024) });
    let body = serde_json::to_vec(&v).unwrap();
    assert!(body.len() > 4 * 1024 * 1024);
    // Refused as soon as the announced size is seen, and also when the size is not announced
    // (chunked body). Sent raw: the server answers without reading the whole body, and HTTP
    // client libraries differ in whether they report that answer or the broken pipe.
    for chunked in [false, true] {
        let (status, headers, text) = raw_upload(
            &s.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/big"),
            OCI_MANIFEST,
            body.clone(),
            chunked,
        )
        .await;
        assert_eq!(status, 413, "chunked: {chunked}: {text}");
        check_envelope(raw_header(&headers, "content-type"), &text, "SIZE_INVALID");
    }
    let r = get(&s.url(&format!("/v2/{repo}/manifests/big")), None).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;

    // Just under the limit is fine.
    let pad = 4 * 1024 * 1024 - good.len() - 64;
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["annotations"] = json!({ "pad": "x".repeat(pad) });
    let body = serde_json::to_vec(&v).unwrap();
    assert!(body.len() <= 4 * 1024 * 1024);
    put_manifest_ok(&base, repo, "almost", OCI_MANIFEST, &body).await;
    assert_manifest(&s, repo, "almost", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn unknown_manifests_and_bad_references() {
    let s = Server::start();
    let base = s.url("");
    push_image(&base, "mf/unknown", "v1", 1, 45).await;
    let missing = digest(b"no such manifest");
    for reference in ["v2", missing.as_str()] {
        let url = s.url(&format!("/v2/mf/unknown/manifests/{reference}"));
        expect_error(get(&url, None).await, 404, "MANIFEST_UNKNOWN").await;
        let r = head(&url, None).await;
        assert_eq!(r.status(), 404);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    // Unknown repository.
    let r = get(&s.url("/v2/mf/nowhere/manifests/v1"), None).await;
    assert_eq!(r.status(), 404);
    // Bad tags and digests in the reference.
    let long = "t".repeat(129);
    for bad in ["-dash", ".dot", long.as_str()] {
        let url = s.url(&format!("/v2/mf/unknown/manifests/{bad}"));
        expect_error(get(&url, None).await, 400, "TAG_INVALID").await;
        let r = put_manifest(&base, "mf/unknown", bad, OCI_MANIFEST, b"{}").await;
        expect_error(r, 400, "TAG_INVALID").await;
    }
    let r = get(&s.url("/v2/mf/unknown/manifests/sha256:abc"), None).await;
    expect_error(r, 400, "DIGEST_INVALID").await;
}

// ---- referrers

const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// An artifact manifest about `subject`.
fn artifact(
    artifact_type: Option<&str>,
    config_type: &str,
    config: &str,
    layer: (&str, usize),
    subject: (&str, usize),
    annotations: Option<Value>,
) -> Vec<u8> {
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.data", "digest": layer.0, "size": layer.1}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1},
    });
    if let Some(t) = artifact_type {
        v["artifactType"] = json!(t);
    }
    if let Some(a) = annotations {
        v["annotations"] = a;
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

async fn referrers(s: &Server, repo: &str, subject: &str, query: &str) -> (Option<String>, Value) {
    let r = get(
        &s.url(&format!("/v2/{repo}/referrers/{subject}{query}")),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    let filters = header(&r, "oci-filters-applied");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    assert!(v["manifests"].is_array());
    (filters, v)
}

fn digests_of(index: &Value) -> Vec<String> {
    let mut d: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    d.sort();
    d
}

#[tokio::test]
async fn referrers_api() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/refs";
    let (subject_d, subject) = push_image(&base, repo, "v1", 1, 46).await;
    let empty = push_blob(&base, repo, b"{}").await;
    let sbom = random_bytes(300, 47);
    let sbom_d = push_blob(&base, repo, &sbom).await;

    // No referrers yet: an empty index, 200.
    let (_, v) = referrers(&s, repo, &subject_d, "").await;
    assert_eq!(v["manifests"], json!([]));

    let sub = (subject_d.as_str(), subject.len());
    let a = artifact(
        Some("application/vnd.example.sbom"),
        EMPTY_CONFIG,
        &empty,
        (&sbom_d, sbom.len()),
        sub,
        None,
    );
    let b = artifact(
        Some("application/vnd.example.sig"),
        EMPTY_CONFIG,
        &empty,
        (&sbom_d, sbom.len()),
        sub,
        Some(json!({"org.example.signer": "me"})),
    );
    // No artifactType: the config's media type stands in for it.
    let c_config = push_blob(&base, repo, b"[]").await;
    let c = artifact(
        None,
        "application/vnd.example.config+json",
        &c_config,
        (&sbom_d, sbom.len()),
        sub,
        None,
    );
    let mut pushed = Vec::new();
    for body in [&a, &b, &c] {
        let d = digest(body);
        // Referrers are usually pushed by digest (oras, cosign).
        let r = put_manifest(&base, repo, &d, OCI_MANIFEST, body).await;
        assert_eq!(r.status(), 201);
        assert_eq!(
            header(&r, "oci-subject").as_deref(),
            Some(subject_d.as_str())
        );
        assert_eq!(
            header(&r, "docker-content-digest").as_deref(),
            Some(d.as_str())
        );
        pushed.push(d);
    }
    // A manifest without a subject answers without OCI-Subject.
    let (plain, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 48).await;
    let r = put_manifest(&base, repo, "plain", OCI_MANIFEST, &plain).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "oci-subject"), None);

    let (filters, v) = referrers(&s, repo, &subject_d, "").await;
    assert_eq!(filters, None);
    let mut want = pushed.clone();
    want.sort();
    assert_eq!(digests_of(&v), want);
    for m in v["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        let (body, at) = if d == pushed[0] {
            (&a, "application/vnd.example.sbom")
        } else if d == pushed[1] {
            (&b, "application/vnd.example.sig")
        } else {
            (&c, "application/vnd.example.config+json")
        };
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert_eq!(m["size"], body.len());
        assert_eq!(m["artifactType"], at);
        if d == pushed[1] {
            assert_eq!(m["annotations"]["org.example.signer"], "me");
        }
    }

    // Filtered by artifactType.
    let (filters, v) = referrers(
        &s,
        repo,
        &subject_d,
        "?artifactType=application/vnd.example.sbom",
    )
    .await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(digests_of(&v), vec![pushed[0].clone()]);
    // Types with a '+' arrive query-encoded.
    let (filters, v) = referrers(
        &s,
        repo,
        &subject_d,
        "?artifactType=application%2Fvnd.example.config%2Bjson",
    )
    .await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(digests_of(&v), vec![pushed[2].clone()]);
    let (filters, v) = referrers(
        &s,
        repo,
        &subject_d,
        "?artifactType=application/vnd.example.none",
    )
    .await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(v["manifests"], json!([]));

    // Referrers of a digest nobody refers to, and in another repository: empty.
    let (_, v) = referrers(&s, repo, &digest(b"nothing"), "").await;
    assert_eq!(v["manifests"], json!([]));
    let (_, v) = referrers(&s, "mf/other", &subject_d, "").await;
    assert_eq!(v["manifests"], json!([]));
    // A bad digest is an error.
    let r = get(&s.url(&format!("/v2/{repo}/referrers/sha256:zz")), None).await;
    expect_error(r, 400, "DIGEST_INVALID").await;

    // Deleting a referrer removes it from the list.
    let r = send(client().delete(s.url(&format!("/v2/{repo}/manifests/{}", pushed[0])))).await;
    assert_eq!(r.status(), 202);
    let (_, v) = referrers(&s, repo, &subject_d, "").await;
    let mut want: Vec<String> = pushed[1..].to_vec();
    want.sort();
    assert_eq!(digests_of(&v), want);
}

#[tokio::test]
async fn referrer_may_be_pushed_before_its_subject_and_may_be_an_index() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/refs2";
    let (m, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 49).await;
    let md = put_manifest_ok(&base, repo, "child", OCI_MANIFEST, &m).await;
    let absent = digest(b"subject not pushed yet");
    let body = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": md, "size": m.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": absent, "size": 10},
    }))
    .unwrap();
    let r = put_manifest(&base, repo, "bundle", OCI_INDEX, &body).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "oci-subject").as_deref(), Some(absent.as_str()));
    let (_, v) = referrers(&s, repo, &absent, "").await;
    assert_eq!(digests_of(&v), vec![digest(&body)]);
    assert_eq!(v["manifests"][0]["mediaType"], OCI_INDEX);
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.bundle"
    );
}

// ---- sha512

/// GET and HEAD of `reference` answer `body` with `Docker-Content-Digest: expected`.
async fn assert_manifest_digest(
    s: &Server,
    repo: &str,
    reference: &str,
    body: &[u8],
    expected: &str,
) {
    let url = s.url(&format!("/v2/{repo}/manifests/{reference}"));
    let r = get(&url, Some(ALL_MANIFEST_TYPES)).await;
    assert_eq!(r.status(), 200, "GET {reference}");
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(expected)
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), body);
    let r = head(&url, Some(ALL_MANIFEST_TYPES)).await;
    assert_eq!(r.status(), 200, "HEAD {reference}");
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(expected)
    );
    assert_eq!(header(&r, "content-length"), Some(body.len().to_string()));
}

/// An image whose blobs and manifest are named by sha512, an index over it pushed by sha512,
/// a referrer of it, and deletes by sha512: the digest asked for is the digest answered.
#[tokio::test]
async fn manifests_pushed_by_sha512_digest() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/s512";
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = random_bytes(1500, 77);
    let cd = push_blob512(&base, repo, &config).await;
    let ld = push_blob512(&base, repo, &layer).await;
    let body = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    let md = digest512(&body);

    let r = put_manifest(&base, repo, &md, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
    assert_eq!(
        header(&r, "location"),
        Some(format!("/v2/{repo}/manifests/{md}"))
    );
    assert_manifest_digest(&s, repo, &md, &body, &md).await;
    // Also served from the blob endpoint by the same digest.
    let r = get(&s.url(&format!("/v2/{repo}/blobs/{md}")), None).await;
    assert_eq!(r.status(), 200);
    assert!(blob_path(&s.dir, &md).is_file());
    // Pushed by sha512, it is not known by its sha256 name.
    let r = get(
        &s.url(&format!("/v2/{repo}/manifests/{}", digest(&body))),
        None,
    )
    .await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;

    // A body that does not hash to the sha512 reference is refused.
    let other = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[]);
    let r = put_manifest(&base, repo, &md, OCI_MANIFEST, &other).await;
    expect_error(r, 400, "DIGEST_INVALID").await;

    // An index over it, by sha512 too; and the same bytes tagged are named by sha256.
    let index = index_body(OCI_INDEX, &[(OCI_MANIFEST, &md, body.len())]);
    let id = digest512(&index);
    let r = put_manifest(&base, repo, &id, OCI_INDEX, &index).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(header(&r, "docker-content-digest"), Some(id.clone()));
    assert_manifest_digest(&s, repo, &id, &index, &id).await;
    put_manifest_ok(&base, repo, "latest", OCI_INDEX, &index).await;
    assert_manifest_digest(&s, repo, "latest", &index, &digest(&index)).await;

    // A referrer of the sha512 manifest.
    push_blob(&base, repo, b"{}").await;
    let ad = push_blob(&base, repo, b"sig").await;
    let art = artifact(
        Some("application/vnd.example.sig"),
        EMPTY_CONFIG,
        &digest(b"{}"),
        (&ad, 3),
        (&md, body.len()),
        None,
    );
    let artd = put_manifest_ok(&base, repo, &digest(&art), OCI_MANIFEST, &art).await;
    let (_, v) = referrers(&s, repo, &md, "").await;
    assert_eq!(v["manifests"][0]["digest"], artd.as_str(), "{v}");

    // Deleted by its sha512 digest.
    let r = send(client().delete(s.url(&format!("/v2/{repo}/manifests/{id}")))).await;
    assert_eq!(r.status(), 202);
    let r = get(&s.url(&format!("/v2/{repo}/manifests/{id}")), None).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
}

/// A read by a digest of an algorithm stevedore does not support finds nothing (the spec's
/// end-2/end-3 answer 404); a malformed digest is still a 400.
#[tokio::test]
async fn reads_by_an_unsupported_algorithm_are_404() {
    let s = Server::start();
    let base = s.url("");
    push_image(&base, "mf/algo", "v1", 1, 46).await;
    let d = format!("sha384:{}", "a".repeat(96));
    let r = get(&s.url(&format!("/v2/mf/algo/manifests/{d}")), None).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    let r = head(&s.url(&format!("/v2/mf/algo/manifests/{d}")), None).await;
    assert_eq!(r.status(), 404);
    let r = get(&s.url(&format!("/v2/mf/algo/blobs/{d}")), None).await;
    expect_error(r, 404, "BLOB_UNKNOWN").await;
    let r = head(&s.url(&format!("/v2/mf/algo/blobs/{d}")), None).await;
    assert_eq!(r.status(), 404);
    let r = get(&s.url("/v2/mf/algo/blobs/sha512:abc"), None).await;
    expect_error(r, 400, "DIGEST_INVALID").await;
}

/// `PUT /v2/<name>/manifests/<digest>?tag=…` (end-7b) sets every tag with the push and says so
/// in `OCI-Tag`; this is how a manifest named by sha512 gets tags. A bad tag refuses the push.
#[tokio::test]
async fn tag_parameters_tag_a_push_by_digest() {
    let s = Server::start();
    let base = s.url("");
    let repo = "mf/tagparam";
    let (body, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 47).await;
    let d = digest(&body);
    let r = client()
        .put(s.url(&format!(
            "/v2/{repo}/manifests/{d}?tag=1.2.3&tag=1.2&tag=latest"
        )))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let accepted: Vec<String> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(',').map(|t| t.trim().to_owned()))
        .collect();
    assert_eq!(accepted, ["1.2.3", "1.2", "latest"]);
    for t in ["1.2.3", "1.2", "latest"] {
        assert_manifest_digest(&s, repo, t, &body, &d).await;
    }

    // sha512: the tags point at the sha512 name.
    let body512 = image_manifest(OCI_MANIFEST, (&digest(b"{}"), 2), &[]);
    push_blob(&base, repo, b"{}").await;
    let d512 = digest512(&body512);
    let r = send_typed(
        client().put(s.url(&format!("/v2/{repo}/manifests/{d512}?tag=big"))),
        OCI_MANIFEST,
        body512.clone(),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(header(&r, "oci-tag").as_deref(), Some("big"));
    assert_manifest_digest(&s, repo, "big", &body512, &d512).await;

    // A bad tag parameter: 400, and neither the manifest nor the good tag is stored.
    let other = image_manifest(OCI_MANIFEST, (&digest(b"{}"), 2), &[]);
    let other = [other.as_slice(), b"\n"].concat();
    let od = digest(&other);
    let r = send_typed(
        client().put(s.url(&format!("/v2/{repo}/manifests/{od}?tag=fine&tag=-bad"))),
        OCI_MANIFEST,
        other,
    )
    .await;
    expect_error(r, 400, "TAG_INVALID").await;
    let r = get(&s.url(&format!("/v2/{repo}/manifests/fine")), None).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    let r = get(&s.url(&format!("/v2/{repo}/manifests/{od}")), None).await;
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
}
