//! sha512 content beyond the push API: the mirror fetching a blob and a manifest by a sha512
//! digest (and refusing bytes that do not match it), garbage collection, `verify`, and
//! recovery of a store holding sha512 blobs.

use crate::common::api::*;
use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::*;
use bytes::Bytes;
use std::time::Duration;

#[tokio::test]
async fn mirror_fetches_by_sha512_and_checks_the_bytes() {
    let up = FakeUpstream::start(FakeOptions::default()).await;
    let repo = "library/s512";
    let layer = random_bytes(20_000, 500);
    let ld = digest512(&layer);
    up.add_blob_named(repo, &ld, Bytes::from(layer.clone()));
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let cd = digest512(&config);
    up.add_blob_named(repo, &cd, Bytes::from(config.clone()));
    let body = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    let md = digest512(&body);
    up.add_manifest_named(repo, &md, OCI_MANIFEST, Bytes::from(body.clone()));
    // An upstream that names bytes by a sha512 they do not have.
    let liar = digest512(b"what the name promises");
    up.add_blob_named(repo, &liar, Bytes::from_static(b"something else entirely"));

    let s = Server::mirror(&up.url(), "");
    for _ in 0..2 {
        let r = get(
            &s.url(&format!("/v2/{repo}/manifests/{md}")),
            Some(OCI_MANIFEST),
        )
        .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
        let r = get(&s.url(&format!("/v2/{repo}/blobs/{ld}")), None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "docker-content-digest"), Some(ld.clone()));
        assert_eq!(r.bytes().await.unwrap().as_ref(), layer.as_slice());
    }
    assert_eq!(
        up.requests("GET", &format!("/blobs/{ld}")),
        1,
        "second read was cached"
    );
    assert_eq!(up.requests("GET", &format!("/manifests/{md}")), 1);
    // The fetched blob is committed once the client has it.
    let committed = eventually(Duration::from_secs(10), || {
        blob_path(&s.dir, &ld).is_file() && blob_path(&s.dir, &md).is_file()
    })
    .await;
    assert!(committed, "stored under blobs/sha512");

    // Bytes that do not match their sha512 name are never handed over whole (the request
    // fails or the connection breaks off), nor cached.
    let url = s.url(&format!("/v2/{repo}/blobs/{liar}"));
    if let Ok(r) = client().get(&url).send().await {
        let status = r.status().as_u16();
        if let Ok(got) = r.bytes().await {
            assert!(
                status != 200 || got.as_ref() != b"something else entirely",
                "a mismatching body was served whole"
            );
        }
    }
    assert!(!blob_path(&s.dir, &liar).exists(), "not cached");
}

#[tokio::test]
async fn gc_verify_and_recovery_handle_sha512_blobs() {
    let mut s = Server::start();
    let base = s.url("");
    let repo = "gc/s512";
    let config = br#"{"architecture":"amd64","os":"linux","s":512}"#.to_vec();
    let layer = random_bytes(4000, 510);
    let cd = push_blob512(&base, repo, &config).await;
    let ld = push_blob512(&base, repo, &layer).await;
    let body = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    let md = digest512(&body);
    let r = put_manifest(&base, repo, &md, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    put_manifest_ok(&base, repo, "v1", OCI_MANIFEST, &body).await;
    let loose = push_blob512(&base, repo, &random_bytes(3000, 511)).await;

    // gc (through the serving registry's debug listener) keeps what the manifest names.
    let config_path = s.config_path.to_str().unwrap().to_owned();
    let debug = s.debug_addr.clone().unwrap();
    let env = [("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str())];
    let (code, out, err) = run_cli_env(&["gc", "--grace", "0s", &config_path], &env);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    assert!(!blob_path(&s.dir, &loose).exists());
    for d in [&cd, &ld, &md] {
        assert!(blob_path(&s.dir, d).exists(), "{d} kept");
    }
    let r = get(&s.url(&format!("/v2/{repo}/blobs/{ld}")), None).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), layer.as_slice());

    // verify hashes each blob in its own algorithm: only the damaged one is reported.
    let (code, out, err) = run_cli_env(&["verify", &config_path], &[]);
    assert_eq!(code, 0, "{out} {err}");
    let mut bytes = std::fs::read(blob_path(&s.dir, &ld)).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(blob_path(&s.dir, &ld), bytes).unwrap();
    let (code, out, _) = run_cli_env(&["verify", &config_path], &[]);
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["corrupt"], serde_json::json!([ld]), "{report}");
    assert_eq!(report["checked"], 4, "{report}");

    // After a crash, a sha512 file nobody recorded is adopted by recovery.
    s.kill9();
    let orphan = random_bytes(777, 512);
    let od = digest512(&orphan);
    let op = blob_path(&s.dir, &od);
    std::fs::create_dir_all(op.parent().unwrap()).unwrap();
    std::fs::write(&op, &orphan).unwrap();
    let s2 = Server::start_with(Options {
        data_dir: Some(s.dir.clone()),
        ..Options::default()
    });
    assert_eq!(
        s2.metric("stevedore_storage_blobs", &[("origin", "proxy")])
            .await,
        1.0,
        "the sha512 orphan was adopted: {}",
        s2.log_text()
    );
    let r = get(
        &s2.url(&format!("/v2/{repo}/manifests/v1")),
        Some(OCI_MANIFEST),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = get(
        &s2.url(&format!("/v2/{repo}/manifests/{md}")),
        Some(OCI_MANIFEST),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
}
