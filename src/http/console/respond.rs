//! The console's responses: HTML with its security headers (a strict Content-Security-Policy
//! that allows nothing but this origin's stylesheet and inline SVG, no framing, no referrer,
//! no caching), redirects, and the embedded assets. Nothing here knows what a page shows.

use super::super::body::{self, Body};
use http::{HeaderValue, Response, StatusCode, header};

/// The console's Content-Security-Policy: no script at all, styles and images from this
/// origin only (inline SVG is part of the document), forms post only here, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The embedded stylesheet.
pub const CSS: &str = include_str!("assets/console.css");

fn secured(mut b: http::response::Builder) -> http::response::Builder {
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        b = b.header(k, v);
    }
    b
}

/// An HTML page, with `Set-Cookie` values to send.
pub fn html(status: StatusCode, page: maud::Markup, cookies: &[String]) -> Response<Body> {
    let text = page.into_string();
    let mut b = secured(Response::builder().status(status))
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CONTENT_LENGTH, text.len());
    for c in cookies {
        if let Ok(v) = HeaderValue::try_from(c.as_str()) {
            b = b.header(header::SET_COOKIE, v);
        }
    }
    b.body(body::full(text)).expect("static headers are valid")
}

/// A `303 See Other` to `location` (a path of this console), with cookies to set.
pub fn redirect(location: &str, cookies: &[String]) -> Response<Body> {
    let mut b = secured(Response::builder().status(StatusCode::SEE_OTHER))
        .header(header::CONTENT_LENGTH, 0);
    if let Ok(v) = HeaderValue::try_from(location) {
        b = b.header(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::try_from(c.as_str()) {
            b = b.header(header::SET_COOKIE, v);
        }
    }
    b.body(body::empty()).expect("static headers are valid")
}

/// The stylesheet (cacheable: it changes only with the binary).
pub fn stylesheet() -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
        .header(header::CONTENT_LENGTH, CSS.len())
        .header("x-content-type-options", "nosniff")
        .header(header::CACHE_CONTROL, "max-age=3600")
        .body(body::full(CSS))
        .expect("static headers are valid")
}

/// A path safe to send a browser back to: one of this console's own (`/ui/…`), never `//host`
/// or a scheme.
pub fn local_path(p: &str) -> Option<&str> {
    (p.starts_with("/ui/") || p == "/ui")
        .then_some(p)
        .filter(|p| !p.contains("//") && !p.contains('\\') && !p.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_local_paths() {
        use super::local_path;
        assert_eq!(local_path("/ui/repos?q=a"), Some("/ui/repos?q=a"));
        assert_eq!(local_path("//evil.example/ui/"), None);
        assert_eq!(local_path("/ui//evil"), None);
        assert_eq!(local_path("https://evil/ui/"), None);
        assert_eq!(local_path("/v2/"), None);
    }
}
