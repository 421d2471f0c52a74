//! What may be pulled through and what comes with it (issue 19): `proxy.allow`/`deny` rules
//! refuse a repository before any upstream contact and for cached content too (403 DENIED
//! naming the rule and how to ask), audit mode serves and counts, unknown `ns` registries are
//! refused once rules exist; and the referrers of proxied images (signatures, SBOMs) come from
//! the upstream's referrers API or its `sha256-<hex>` tag scheme, merged with local ones, and
//! pull through the mirror.

use crate::common::api::send_typed;
use crate::common::fake_upstream::{FakeOptions, FakeUpstream, Fault};
use crate::common::tools::{require, skopeo};
use crate::common::*;
use bytes::Bytes;
use serde_json::Value;

const SIG_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM_TYPE: &str = "application/spdx+json";

/// Puts a one-layer image in the fake under `repo:tag`; returns its manifest digest and bytes.
fn seed_image(up: &FakeUpstream, repo: &str, tag: &str, seed: u64) -> (String, Bytes) {
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}"
    ));
    let cd = up.add_blob(repo, config.clone());
    let layer = Bytes::from(random_bytes(3000, seed));
    let ld = up.add_blob(repo, layer.clone());
    let body = Bytes::from(image_manifest(
        OCI_MANIFEST,
        (&cd, config.len()),
        &[(&ld, layer.len())],
    ));
    (
        up.add_manifest(repo, Some(tag), OCI_MANIFEST, body.clone()),
        body,
    )
}

/// A cosign-style artifact manifest (with `subject`) of `artifact_type` over one blob.
fn artifact(subject: (&str, usize), artifact_type: &str, blob: (&str, usize)) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": digest(b"{}"),
            "size": 2
        },
        "layers": [{"mediaType": "application/octet-stream", "digest": blob.0, "size": blob.1}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1},
    }))
    .unwrap()
}

/// Attaches a signature to `subject` in the fake's `repo`; returns its digest and bytes.
fn sign_upstream(up: &FakeUpstream, repo: &str, subject: (&str, usize)) -> (String, Bytes) {
    up.add_blob(repo, Bytes::from_static(b"{}"));
    let sig = Bytes::from(format!("signature of {}", subject.0));
    let sd = up.add_blob(repo, sig.clone());
    let body = Bytes::from(artifact(subject, SIG_TYPE, (&sd, sig.len())));
    (
        up.add_manifest(repo, None, OCI_MANIFEST, body.clone()),
        body,
    )
}

async fn get(url: &str) -> reqwest::Response {
    crate::common::api::get(url, Some(&format!("{OCI_MANIFEST}, {OCI_INDEX}"))).await
}

/// Asserts a 403 DENIED whose message contains every one of `says`.
async fn assert_denied(url: &str, says: &[&str]) {
    let r = get(url).await;
    assert_eq!(r.status(), 403, "{url}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    for s in says {
        assert!(message.contains(s), "{url}: {message:?} lacks {s:?}");
    }
}

/// Requests the fake received for paths containing `part`, any method.
fn upstream_requests(up: &FakeUpstream, part: &str) -> usize {
    up.request_log()
        .iter()
        .filter(|l| l.path.contains(part))
        .count()
}

const RULES: &str = "  allow: [\"library/*\", \"bitnami/*\"]\n  deny: [library/bad]\n  policy:\n    contact: \"ask in #registry\"\n";

#[tokio::test]
async fn denied_repositories_cost_no_upstream_request() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (ok, _) = seed_image(&up, "library/app", "1.0", 1);
    let (bad, _) = seed_image(&up, "library/bad", "1.0", 2);
    let (evil, _) = seed_image(&up, "evil/app", "1.0", 3);
    let s = Server::mirror(&up.url(), RULES);

    assert_eq!(
        get(&s.url("/v2/library/app/manifests/1.0")).await.status(),
        200
    );
    // Not in the allow list: every read endpoint refuses, naming the rule and the contact.
    for path in [
        "/v2/evil/app/manifests/1.0".to_owned(),
        format!("/v2/evil/app/manifests/{evil}"),
        format!("/v2/evil/app/blobs/{evil}"),
        "/v2/evil/app/tags/list".to_owned(),
        format!("/v2/evil/app/referrers/{evil}"),
    ] {
        assert_denied(&s.url(&path), &["proxy.allow", "ask in #registry"]).await;
    }
    let r = send(client().head(s.url("/v2/evil/app/manifests/1.0"))).await;
    assert_eq!(r.status(), 403);
    // Allowed by glob but denied by name.
    assert_denied(
        &s.url("/v2/library/bad/manifests/1.0"),
        &["proxy.deny rule \"library/bad\"", "ask in #registry"],
    )
    .await;
    assert_denied(&s.url(&format!("/v2/library/bad/manifests/{bad}")), &[]).await;
    // `*` stays within one component.
    assert_denied(&s.url("/v2/library/a/b/manifests/1.0"), &["proxy.allow"]).await;

    assert_eq!(upstream_requests(&up, "evil/"), 0, "{:?}", up.request_log());
    assert_eq!(upstream_requests(&up, "library/bad"), 0);
    assert_eq!(upstream_requests(&up, "library/a/b"), 0);
    assert!(upstream_requests(&up, "library/app") > 0);
    assert_eq!(
        s.metric(
            "stevedore_proxy_policy_refusals_total",
            &[("mode", "enforce")]
        )
        .await,
        9.0
    );
    assert!(s.logged("policy: refused").await, "refusals are logged");
    let _ = ok;
}

#[tokio::test]
async fn cached_content_is_refused_once_its_repository_is_denied() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (md, _) = seed_image(&up, "library/app", "1.0", 4);
    let data = tempfile::tempdir().unwrap();
    let start = |extra: &str| {
        Server::start_with(Options {
            extra_yaml: format!("proxy:\n  remoteurl: {}\n{extra}", up.url()),
            data_dir: Some(data.path().join("data")),
            ..Options::default()
        })
    };
    let mut s = start("");
    assert_eq!(
        get(&s.url("/v2/library/app/manifests/1.0")).await.status(),
        200
    );
    s.stop();
    let before = up.request_log().len();
    let s = start("  deny: [\"library/app\"]\n  offline: true\n");
    assert_denied(
        &s.url(&format!("/v2/library/app/manifests/{md}")),
        &["proxy.deny rule \"library/app\""],
    )
    .await;
    assert_denied(&s.url("/v2/library/app/manifests/1.0"), &[]).await;
    assert_eq!(up.request_log().len(), before);
}

#[tokio::test]
async fn audit_mode_serves_logs_and_counts() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    seed_image(&up, "evil/app", "1.0", 5);
    let s = Server::mirror(
        &up.url(),
        "  allow: [\"library/*\"]\n  policy:\n    mode: audit\n",
    );
    assert_eq!(
        get(&s.url("/v2/evil/app/manifests/1.0")).await.status(),
        200
    );
    assert_eq!(
        s.metric(
            "stevedore_proxy_policy_refusals_total",
            &[("mode", "audit")]
        )
        .await,
        1.0
    );
    assert_eq!(
        s.metric(
            "stevedore_proxy_policy_refusals_total",
            &[("mode", "enforce")]
        )
        .await,
        0.0
    );
    assert!(s.logged("policy audit: would refuse").await);
}

#[tokio::test]
async fn rules_per_upstream_and_unknown_registries() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    seed_image(&up, "team/app", "1.0", 6);
    seed_image(&up, "other/app", "1.0", 7);
    let s = Server::mirror(
        &up.url(),
        &format!(
            "  upstreams:\n    - name: q.example\n      remoteurl: {}\n      prefix: q/\n      allow: [\"team/*\"]\n",
            up.url()
        ),
    );
    assert_eq!(
        get(&s.url("/v2/q/team/app/manifests/1.0")).await.status(),
        200
    );
    assert_denied(
        &s.url("/v2/q/other/app/manifests/1.0"),
        &["proxy.upstreams[0].allow", "mirror's administrators"],
    )
    .await;
    // The default upstream has no rules of its own.
    assert_eq!(
        get(&s.url("/v2/other/app/manifests/1.0")).await.status(),
        200
    );
    // With a rule set anywhere, a registry this mirror does not mirror is refused, not 404.
    assert_denied(
        &s.url("/v2/foo/bar/manifests/1.0?ns=unknown.example"),
        &["unknown.example"],
    )
    .await;
    assert_eq!(upstream_requests(&up, "other/app"), 1);

    // Without rules, containerd gets its 404 and asks the registry itself.
    let plain = Server::mirror(&up.url(), "");
    let r = get(&plain.url("/v2/foo/bar/manifests/1.0?ns=unknown.example")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn skopeo_copies_an_allowed_image_and_is_refused_a_denied_one() {
    require("skopeo", "skopeo");
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let (md, _) = seed_image(&up, "library/app", "1.0", 8);
    seed_image(&up, "evil/app", "1.0", 9);
    let s = Server::mirror(&up.url(), RULES);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_owned();
    let host = s.host().to_owned();
    let ok = tokio::task::spawn_blocking({
        let (t, host) = (t.clone(), host.clone());
        move || {
            let dest = format!("dir:{}", t.join("ok").display());
            skopeo(
                &t,
                &[
                    "copy",
                    "--src-tls-verify=false",
                    &format!("docker://{host}/library/app:1.0"),
                    &dest,
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let manifest = std::fs::read(t.join("ok/manifest.json")).unwrap();
    assert_eq!(digest(&manifest), md);

    let denied = tokio::task::spawn_blocking(move || {
        let dest = format!("dir:{}", t.join("denied").display());
        skopeo(
            &t,
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{host}/evil/app:1.0"),
                &dest,
            ],
        )
    })
    .await
    .unwrap();
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("denied") && err.contains("ask in #registry"),
        "{err}"
    );
    assert_eq!(upstream_requests(&up, "evil/"), 0);
}

fn manifests_of(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_owned(),
                d["artifactType"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn referrers_come_from_the_upstream_api_merge_and_pull_through() {
    let up = FakeUpstream::start(FakeOptions {
        referrers_api: true,
        ..FakeOptions::default()
    })
    .await;
    let repo = "library/app";
    let (md, mbody) = seed_image(&up, repo, "1.0", 10);
    let (sig, sig_body) = sign_upstream(&up, repo, (&md, mbody.len()));
    let s = Server::mirror(&up.url(), "  tagttl: 1h\n");

    let r = get(&s.url(&format!("/v2/{repo}/referrers/{md}"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    let index: Value = r.json().await.unwrap();
    assert_eq!(manifests_of(&index), [(sig.clone(), SIG_TYPE.to_owned())]);

    // The signature and its blob pull through the mirror.
    let r = get(&s.url(&format!("/v2/{repo}/manifests/{sig}"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), sig_body);
    let sig_blob = format!("signature of {md}");
    let r = get(&s.url(&format!("/v2/{repo}/blobs/{}", digest(sig_blob.as_bytes())))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), sig_blob.as_bytes());

    // A local SBOM pushed beside it is merged; the upstream's list is cached for tagttl.
    let base = s.url("");
    let base = base.trim_end_matches('/');
    push_blob(base, repo, b"{}").await;
    let sbom = b"{\"spdxVersion\":\"SPDX-2.3\"}";
    let bd = push_blob(base, repo, sbom).await;
    let body = artifact((&md, mbody.len()), SBOM_TYPE, (&bd, sbom.len()));
    let r = send_typed(
        client().put(s.url(&format!("/v2/{repo}/manifests/{}", digest(&body)))),
        OCI_MANIFEST,
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let index: Value = get(&s.url(&format!("/v2/{repo}/referrers/{md}")))
        .await
        .json()
        .await
        .unwrap();
    let mut got = manifests_of(&index);
    got.sort();
    let mut want = vec![
        (sig.clone(), SIG_TYPE.to_owned()),
        (digest(&body), SBOM_TYPE.to_owned()),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        upstream_requests(&up, "/referrers/"),
        1,
        "cached for tagttl"
    );

    // artifactType filtering.
    let r = get(&s.url(&format!(
        "/v2/{repo}/referrers/{md}?artifactType={}",
        SIG_TYPE.replace('+', "%2B")
    )))
    .await;
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let index: Value = r.json().await.unwrap();
    assert_eq!(manifests_of(&index), [(sig.clone(), SIG_TYPE.to_owned())]);
    assert_eq!(
        s.metric(
            "stevedore_upstream_requests_total",
            &[("operation", "referrers")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn referrers_fall_back_to_the_tag_scheme() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let repo = "library/app";
    let (md, mbody) = seed_image(&up, repo, "1.0", 11);
    let (sig, sig_body) = sign_upstream(&up, repo, (&md, mbody.len()));
    let fallback = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sig, "size": sig_body.len(), "artifactType": SIG_TYPE}],
    }))
    .unwrap();
    let tag = format!("sha256-{}", md.trim_start_matches("sha256:"));
    up.add_manifest(repo, Some(&tag), OCI_INDEX, Bytes::from(fallback));
    let (other, _) = seed_image(&up, repo, "2.0", 12);
    let s = Server::mirror(&up.url(), "");

    let r = get(&s.url(&format!("/v2/{repo}/referrers/{md}"))).await;
    assert_eq!(r.status(), 200);
    let index: Value = r.json().await.unwrap();
    assert_eq!(manifests_of(&index), [(sig.clone(), SIG_TYPE.to_owned())]);
    assert_eq!(upstream_requests(&up, &format!("/referrers/{md}")), 1);
    assert_eq!(upstream_requests(&up, &format!("/manifests/{tag}")), 1);
    let r = get(&s.url(&format!("/v2/{repo}/manifests/{sig}"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), sig_body);

    // No fallback tag either: no referrers.
    let index: Value = get(&s.url(&format!("/v2/{repo}/referrers/{other}")))
        .await
        .json()
        .await
        .unwrap();
    assert!(manifests_of(&index).is_empty());
}

#[tokio::test]
async fn referrers_when_the_upstream_cannot_be_asked() {
    let up = FakeUpstream::start(FakeOptions {
        referrers_api: true,
        ..FakeOptions::default()
    })
    .await;
    let repo = "library/app";
    let (md, mbody) = seed_image(&up, repo, "1.0", 13);
    let (sig, _) = sign_upstream(&up, repo, (&md, mbody.len()));
    let (other, obody) = seed_image(&up, repo, "2.0", 14);
    let (lone, _) = seed_image(&up, repo, "3.0", 15);
    let (fourth, fbody) = seed_image(&up, repo, "4.0", 16);
    // tagttl 0: every request asks the upstream, but the last answer is kept for outages.
    let s = Server::mirror(&up.url(), "  tagttl: 0s\n  breakerthreshold: 0\n");
    let url = s.url(&format!("/v2/{repo}/referrers/{md}"));
    let index: Value = get(&url).await.json().await.unwrap();
    assert_eq!(manifests_of(&index), [(sig.clone(), SIG_TYPE.to_owned())]);
    let _ = get(&s.url(&format!("/v2/{repo}/referrers/{other}"))).await;

    // A local referrer of `other`, pushed while the upstream is down.
    push_blob(&s.url(""), repo, b"{}").await;
    let sbom = b"{\"spdxVersion\":\"SPDX-2.3\"}";
    let bd = push_blob(&s.url(""), repo, sbom).await;
    let body = artifact((&other, obody.len()), SBOM_TYPE, (&bd, sbom.len()));
    up.set_fault(Fault::Down);
    let r = send_typed(
        client().put(s.url(&format!("/v2/{repo}/manifests/{}", digest(&body)))),
        OCI_MANIFEST,
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 201);
    let body4 = artifact((&fourth, fbody.len()), SBOM_TYPE, (&bd, sbom.len()));
    let r = send_typed(
        client().put(s.url(&format!("/v2/{repo}/manifests/{}", digest(&body4)))),
        OCI_MANIFEST,
        body4.clone(),
    )
    .await;
    assert_eq!(r.status(), 201);
    // Never asked upstream, but referrers here: those alone, marked.
    let r = get(&s.url(&format!("/v2/{repo}/referrers/{fourth}"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-stevedore-referrers-source"], "local");
    let index: Value = r.json().await.unwrap();
    assert_eq!(
        manifests_of(&index),
        [(digest(&body4), SBOM_TYPE.to_owned())]
    );

    // The last upstream answer, though past tagttl.
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-stevedore-referrers-source").is_none());
    let index: Value = r.json().await.unwrap();
    assert_eq!(manifests_of(&index), [(sig, SIG_TYPE.to_owned())]);
    // Cached upstream list (empty) merged with the local one.
    let index: Value = get(&s.url(&format!("/v2/{repo}/referrers/{other}")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        manifests_of(&index),
        [(digest(&body), SBOM_TYPE.to_owned())]
    );
    // Never asked and nothing here: the upstream's error, not an empty list.
    let r = get(&s.url(&format!("/v2/{repo}/referrers/{lone}"))).await;
    assert!(r.status().is_server_error(), "{}", r.status());
}
