//! An upstream repository's whole tag list: `GET /v2/<repo>/tags/list`, then every page its
//! `Link: <…?last=…&n=…>; rel="next"` header names, bounded in pages and tags. Parsing only;
//! the requests go through [`UpstreamClient::list_tags`].

use super::{UpstreamClient, UpstreamError};

/// Pages followed at most (Docker Hub pages by 100 or 1000 tags).
const MAX_PAGES: usize = 200;
/// Tags accepted at most in one list.
const MAX_TAGS: usize = 200_000;

impl UpstreamClient {
    /// Every tag of `repo` as the upstream lists them, following its pagination. A list longer
    /// than `MAX_TAGS` (or `MAX_PAGES` pages) is refused as `TooLarge` rather than cut short.
    pub async fn all_tags(&self, repo: &str) -> Result<Vec<String>, UpstreamError> {
        let mut tags = Vec::new();
        let mut query: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let (bytes, link) = self.list_tags(repo, query.as_deref()).await?;
            tags.extend(parse_page(&bytes)?);
            if tags.len() > MAX_TAGS {
                return Err(UpstreamError::TooLarge);
            }
            match link.as_deref().and_then(next_query) {
                // A next page that asks for the same page again would loop.
                Some(next) if query.as_deref() != Some(next.as_str()) => query = Some(next),
                _ => return Ok(tags),
            }
        }
        Err(UpstreamError::TooLarge)
    }
}

/// The `tags` of a tag list body (`null` or absent: none).
fn parse_page(bytes: &[u8]) -> Result<Vec<String>, UpstreamError> {
    #[derive(serde::Deserialize)]
    struct TagList {
        tags: Option<Vec<String>>,
    }
    let list: TagList = serde_json::from_slice(bytes)
        .map_err(|e| UpstreamError::Invalid(format!("tag list: {e}")))?;
    Ok(list.tags.unwrap_or_default())
}

/// The query of the `rel="next"` target of a `Link` header (relative or absolute URL).
fn next_query(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once('>')?;
        let target = target.trim().strip_prefix('<')?;
        let next = params.split(';').any(|p| {
            p.trim()
                .strip_prefix("rel=")
                .is_some_and(|v| v.trim_matches('"').split(' ').any(|r| r == "next"))
        });
        let (_, query) = target.split_once('?')?;
        (next && !query.is_empty()).then(|| query.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        for (link, want) in [
            (
                r#"</v2/library/a/tags/list?last=v9&n=100>; rel="next""#,
                Some("last=v9&n=100"),
            ),
            (
                r#"<https://r.example/v2/a/tags/list?n=2&last=b>;rel=next"#,
                Some("n=2&last=b"),
            ),
            (
                r#"</x?a=1>; rel="prev", </v2/a/tags/list?last=c>; rel="next""#,
                Some("last=c"),
            ),
            (r#"</v2/a/tags/list>; rel="next""#, None),
            (r#"</v2/a/tags/list?last=c>; rel="prev""#, None),
            ("garbage", None),
        ] {
            assert_eq!(next_query(link).as_deref(), want, "{link}");
        }
    }

    #[test]
    fn pages() {
        assert_eq!(
            parse_page(br#"{"name":"a","tags":["1","2"]}"#).unwrap(),
            ["1", "2"]
        );
        assert!(
            parse_page(br#"{"name":"a","tags":null}"#)
                .unwrap()
                .is_empty()
        );
        assert!(parse_page(b"<html>").is_err());
    }
}
