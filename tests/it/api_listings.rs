//! Tags lists and `/v2/_catalog`: lexical order, `n`/`last` pagination with a `Link` header
//! (absent on the last page), `n=0`, a capped huge `n`, and bad `n`.

use crate::common::api::*;
use crate::common::*;
use serde_json::{Value, json};

/// Pushes one small manifest to `repo` and tags it with every tag of `tags`.
async fn tag_many(base: &str, repo: &str, tags: &[String]) {
    let (m, _, _) = push_image_blobs(base, repo, OCI_MANIFEST, 1, 60).await;
    for t in tags {
        let r = put_manifest(base, repo, t, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), 201, "{t}");
    }
}

/// The `<…>` URL of a `Link: <url>; rel="next"` header.
fn next_link(r: &reqwest::Response) -> Option<String> {
    let link = header(r, "link")?;
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let url = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .map(|(u, _)| u.to_owned())
        .expect("<url> in Link");
    Some(url)
}

/// Follows `Link` headers from `first` and returns every page's `key` entries.
async fn pages(s: &Server, first: &str, key: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut url = Some(s.url(first));
    while let Some(u) = url {
        let r = get(&u, None).await;
        assert_eq!(r.status(), 200, "{u}");
        assert_eq!(
            header(&r, "content-type").as_deref(),
            Some("application/json")
        );
        url = next_link(&r).map(|l| {
            assert!(l.starts_with('/'), "{l}");
            s.url(&l)
        });
        let v: Value = r.json().await.unwrap();
        out.push(
            v[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is an array: {v}"))
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
        );
        assert!(out.len() < 100, "pagination does not end");
    }
    out
}

#[tokio::test]
async fn tags_list_is_sorted_and_paginates() {
    let s = Server::start();
    let base = s.url("");
    let repo = "ls/tags";
    let tags: Vec<String> = ["v2", "latest", "v10", "a", "v1", "B", "1.0"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    tag_many(&base, repo, &tags).await;
    let mut sorted = tags.clone();
    sorted.sort();

    let r = get(&s.url(&format!("/v2/{repo}/tags/list")), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "link"), None);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], repo);
    assert_eq!(v["tags"], json!(sorted));

    // Pages of 2: Link on every page but the last, and together they are the whole list.
    let got = pages(&s, &format!("/v2/{repo}/tags/list?n=2"), "tags").await;
    assert_eq!(got.len(), 4);
    assert!(got[..3].iter().all(|p| p.len() == 2));
    assert_eq!(got.concat(), sorted);

    // The Link names n and last.
    let r = get(&s.url(&format!("/v2/{repo}/tags/list?n=3")), None).await;
    let link = next_link(&r).unwrap();
    assert!(
        link.starts_with(&format!("/v2/{repo}/tags/list?")),
        "{link}"
    );
    assert!(link.contains("n=3"), "{link}");
    assert!(link.contains(&format!("last={}", sorted[2])), "{link}");

    // A page that ends exactly at the end has no Link.
    let r = get(
        &s.url(&format!("/v2/{repo}/tags/list?n={}", sorted.len())),
        None,
    )
    .await;
    assert_eq!(header(&r, "link"), None);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(sorted));

    // `last` alone starts after that tag; after the last tag, nothing.
    let r = get(&s.url(&format!("/v2/{repo}/tags/list?last=v1")), None).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["v10", "v2"]));
    let r = get(&s.url(&format!("/v2/{repo}/tags/list?last=zzz")), None).await;
    assert_eq!(header(&r, "link"), None);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!([]));

    // n=0: an empty list, no Link.
    let r = get(&s.url(&format!("/v2/{repo}/tags/list?n=0")), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "link"), None);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!([]));

    // A huge n is fine.
    let r = get(&s.url(&format!("/v2/{repo}/tags/list?n=99999999999")), None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(sorted));
}

#[tokio::test]
async fn tags_of_nested_names_do_not_mix() {
    let s = Server::start();
    let base = s.url("");
    tag_many(&base, "ls/a", &["one".into()]).await;
    tag_many(&base, "ls/a/b", &["two".into()]).await;
    tag_many(&base, "ls/ab", &["three".into()]).await;
    for (repo, want) in [("ls/a", "one"), ("ls/a/b", "two"), ("ls/ab", "three")] {
        let v: Value = get(&s.url(&format!("/v2/{repo}/tags/list")), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["tags"], json!([want]), "{repo}");
    }
}

#[tokio::test]
async fn tags_list_without_n_returns_every_tag_up_to_the_cap() {
    // Clients that do not paginate (many do not) must see all of a repository's tags.
    let s = Server::start();
    let base = s.url("");
    let repo = "ls/manytags";
    let tags: Vec<String> = (0..1005).map(|i| format!("t{i:04}")).collect();
    let (m, _, _) = push_image_blobs(&base, repo, OCI_MANIFEST, 1, 61).await;
    let m = std::sync::Arc::new(m);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in tags.chunks(tags.len().div_ceil(8)) {
        let (base, m, chunk) = (base.clone(), m.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for t in chunk {
                let r = put_manifest(&base, repo, &t, OCI_MANIFEST, &m).await;
                assert_eq!(r.status(), 201, "{t}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }

    // Without n: more than a default page of 100.
    let r = get(&s.url(&format!("/v2/{repo}/tags/list")), None).await;
    assert_eq!(r.status(), 200);
    let link = next_link(&r);
    let v: Value = r.json().await.unwrap();
    let first = v["tags"].as_array().unwrap().len();
    assert_eq!(first, 1000, "a page is capped at 1000");
    assert!(link.is_some(), "a capped page has a Link");

    // A huge n is capped too, and the Link continues where the page stopped.
    let got = pages(&s, &format!("/v2/{repo}/tags/list?n=5000"), "tags").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].len(), 1000);
    assert_eq!(got.concat(), tags);
}

#[tokio::test]
async fn unknown_repository_has_no_tags_list() {
    let s = Server::start();
    let r = get(&s.url("/v2/ls/nothing/tags/list"), None).await;
    let v = expect_error(r, 404, "NAME_UNKNOWN").await;
    assert_eq!(v["errors"][0]["detail"]["name"], "ls/nothing");
}

#[tokio::test]
async fn bad_page_sizes() {
    let s = Server::start();
    let base = s.url("");
    tag_many(&base, "ls/bad", &["x".into()]).await;
    for n in ["-1", "abc", "1.5", "18446744073709551616"] {
        for path in ["/v2/ls/bad/tags/list", "/v2/_catalog"] {
            let r = get(&s.url(&format!("{path}?n={n}")), None).await;
            expect_error(r, 400, "PAGINATION_NUMBER_INVALID").await;
        }
    }
}

#[tokio::test]
async fn catalog_lists_repositories_and_paginates() {
    let s = Server::start();
    let base = s.url("");
    let r = get(&s.url("/v2/_catalog"), None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!([]));

    let repos = ["cat/b", "cat/a", "cat/a/deep", "zeta", "alpha", "cat/c"];
    for (i, repo) in repos.iter().enumerate() {
        push_blob(&base, repo, &random_bytes(10, 70 + i as u64)).await;
    }
    let mut sorted: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    sorted.sort();

    let r = get(&s.url("/v2/_catalog"), None).await;
    assert_eq!(header(&r, "link"), None);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(sorted));

    let got = pages(&s, "/v2/_catalog?n=4", "repositories").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].len(), 4);
    assert_eq!(got.concat(), sorted);

    let r = get(&s.url("/v2/_catalog?n=2"), None).await;
    let link = next_link(&r).unwrap();
    assert!(link.starts_with("/v2/_catalog?"), "{link}");
    assert!(link.contains("n=2"), "{link}");
    // `last` is a repository name with a slash, query-encoded or not.
    assert!(
        link.contains("last=cat%2Fa") || link.contains("last=cat/a"),
        "{link}"
    );
    let r = get(&s.url("/v2/_catalog?last=cat/a&n=2"), None).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["cat/a/deep", "cat/b"]));

    let r = get(&s.url("/v2/_catalog?n=0"), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "link"), None);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!([]));

    let r = get(&s.url("/v2/_catalog?n=1000000"), None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(sorted));
}

#[tokio::test]
async fn catalog_without_n_pages_by_100() {
    let s = Server::start();
    let base = s.url("");
    let mut repos: Vec<String> = (0..105).map(|i| format!("many/r{i:03}")).collect();
    for (i, repo) in repos.iter().enumerate() {
        push_blob(&base, repo, &random_bytes(8, 100 + i as u64)).await;
    }
    repos.sort();
    let r = get(&s.url("/v2/_catalog"), None).await;
    assert!(next_link(&r).is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"].as_array().unwrap().len(), 100);
    let got = pages(&s, "/v2/_catalog", "repositories").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got.concat(), repos);
}
