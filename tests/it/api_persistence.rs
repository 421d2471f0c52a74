//! Restart persistence: what was pushed before a stop pulls byte-exact from a new process on the
//! same data directory, and an upload session started before the stop can be finished after it.

use crate::common::api::*;
use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn content_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let opts = || Options {
        data_dir: Some(data.path().join("root")),
        ..Default::default()
    };
    let mut s = Server::start_with(opts());
    let base = s.url("");

    // An OCI image, a Docker image, an index over both, a referrer, a mounted blob, a tag
    // deleted before the restart, and a half-finished upload.
    let (oci, oci_config, oci_layers) =
        push_image_blobs(&base, "keep/app", OCI_MANIFEST, 2, 90).await;
    let (docker, _, _) = push_image_blobs(&base, "keep/app", DOCKER_MANIFEST, 1, 91).await;
    let oci_d = put_manifest_ok(&base, "keep/app", "oci", OCI_MANIFEST, &oci).await;
    let docker_d = put_manifest_ok(&base, "keep/app", "docker", DOCKER_MANIFEST, &docker).await;
    let index = index_body(
        OCI_INDEX,
        &[
            (OCI_MANIFEST, &oci_d, oci.len()),
            (DOCKER_MANIFEST, &docker_d, docker.len()),
        ],
    );
    let index_d = put_manifest_ok(&base, "keep/app", "multi", OCI_INDEX, &index).await;
    put_manifest_ok(&base, "keep/app", "gone", OCI_MANIFEST, &oci).await;
    let r = send(client().delete(s.url("/v2/keep/app/manifests/gone"))).await;
    assert_eq!(r.status(), 202);

    let empty = push_blob(&base, "keep/app", b"{}").await;
    let referrer = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.data", "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": oci_d, "size": oci.len()},
    }))
    .unwrap();
    let referrer_d = digest(&referrer);
    put_manifest_ok(&base, "keep/app", &referrer_d, OCI_MANIFEST, &referrer).await;

    let layer_d = digest(&oci_layers[0]);
    let r = client()
        .post(s.url(&format!(
            "/v2/keep/other/blobs/uploads/?mount={layer_d}&from=keep/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let upload_data = random_bytes(6000, 92);
    let upload = start_upload(&base, "keep/up").await;
    let r = client()
        .patch(&upload)
        .header("content-range", "0-3999")
        .body(upload_data[..4000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let upload_path = header(&r, "location").unwrap();

    s.stop();
    let s = Server::start_with(opts());
    let base = s.url("");
    assert_ne!(base, "", "restarted");

    for (tag, d, mt, body) in [
        ("oci", &oci_d, OCI_MANIFEST, &oci),
        ("docker", &docker_d, DOCKER_MANIFEST, &docker),
        ("multi", &index_d, OCI_INDEX, &index),
    ] {
        for reference in [tag, d.as_str()] {
            let r = get(
                &s.url(&format!("/v2/keep/app/manifests/{reference}")),
                Some(mt),
            )
            .await;
            assert_eq!(r.status(), 200, "{reference}");
            assert_eq!(header(&r, "content-type").as_deref(), Some(mt));
            assert_eq!(
                header(&r, "docker-content-digest").as_deref(),
                Some(d.as_str())
            );
            assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
        }
    }
    for blob in std::iter::once(&oci_config).chain(oci_layers.iter()) {
        let r = get(
            &s.url(&format!("/v2/keep/app/blobs/{}", digest(blob))),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
    }
    // The mount, and the isolation, hold.
    let r = get(&s.url(&format!("/v2/keep/other/blobs/{layer_d}")), None).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), oci_layers[0].as_slice());
    let r = head(
        &s.url(&format!("/v2/keep/other/blobs/{}", digest(&oci_config))),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);

    let v: Value = get(&s.url("/v2/keep/app/tags/list"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["docker", "multi", "oci"]));
    let v: Value = get(&s.url("/v2/_catalog"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["repositories"], json!(["keep/app", "keep/other"]));
    let v: Value = get(&s.url(&format!("/v2/keep/app/referrers/{oci_d}")), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"][0]["digest"], referrer_d.as_str());
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );

    // The upload carries on where it stood.
    let upload = s.url(&upload_path);
    let r = get(&upload, None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-3999"));
    let r = client()
        .patch(&upload)
        .header("content-range", "4000-5999")
        .body(upload_data[4000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = client()
        .put(with_query(
            &upload,
            &format!("digest={}", digest(&upload_data)),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = get(
        &s.url(&format!("/v2/keep/up/blobs/{}", digest(&upload_data))),
        None,
    )
    .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), upload_data.as_slice());
}

#[tokio::test]
async fn a_wrong_digest_after_restart_still_leaves_nothing() {
    // After a restart the session's hash state is gone and the data is re-hashed: the check
    // must still hold.
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("root");
    let opts = || Options {
        data_dir: Some(root.clone()),
        ..Default::default()
    };
    let mut s = Server::start_with(opts());
    let base = s.url("");
    let bytes = random_bytes(3000, 93);
    let upload = start_upload(&base, "keep/bad").await;
    let r = client()
        .patch(&upload)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = header(&r, "location").unwrap();
    s.stop();

    let s = Server::start_with(opts());
    let wrong = digest(b"not these bytes");
    let r = send(client().put(with_query(&s.url(&path), &format!("digest={wrong}")))).await;
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert!(files_under(&root.join("blobs")).is_empty());
    assert!(entries(&root.join("uploads")).is_empty());
    let r = head(
        &s.url(&format!("/v2/keep/bad/blobs/{}", digest(&bytes))),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
}

/// Many pushes at once, each acknowledged only after the index is durable, must not stall
/// (sled 0.34's `flush_async` deadlocks when called concurrently).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_do_not_stall() {
    let s = Server::start();
    let base = s.url("");
    let (_, body) = push_image(&base, "stall/app", "seed", 1, 7).await;
    let body = std::sync::Arc::new(body);
    let work = async {
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..32 {
            let (base, body) = (base.clone(), body.clone());
            tasks.spawn(async move {
                for i in 0..10 {
                    let r = send_typed(
                        client().put(format!("{base}/v2/stall/app/manifests/t{t}-{i}")),
                        OCI_MANIFEST,
                        body.to_vec(),
                    )
                    .await;
                    assert_eq!(r.status(), 201);
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), work)
        .await
        .expect("320 concurrent manifest pushes stalled");
}
