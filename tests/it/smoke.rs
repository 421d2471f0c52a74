use crate::common::api::get;
use crate::common::*;

#[tokio::test]
async fn api_version_and_push_pull() {
    let s = Server::start();
    let r = client().get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let (d, body) = push_image(&s.url(""), "smoke/img", "v1", 2, 1).await;
    let r = get(&s.url("/v2/smoke/img/manifests/v1"), Some(OCI_MANIFEST)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
}
