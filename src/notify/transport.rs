//! One delivery attempt: a POST of a rendered event to an endpoint, under the endpoint's
//! timeout, and what came of it (delivered, retry — with the receiver's `Retry-After` —, or
//! rejected for good).
//!
//! Owns the webhook HTTP client (hyper, with the upstream client's TLS roots). Must not log
//! header values: the configured ones may be tokens.

use super::format::Rendered;
use super::sign::Signer;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::{Duration, SystemTime};

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx or 3xx (distribution's rule).
    Delivered(u16),
    /// Worth trying again: a 5xx, 408, 429, a timeout or a connection failure. `retry_after`
    /// is the receiver's `Retry-After`, when it sent one.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// A 4xx other than 408 and 429: the receiver refuses this event.
    Rejected(u16),
}

/// Posts events to one endpoint.
pub struct Transport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
    timeout: Duration,
    signer: Option<Signer>,
}

impl Transport {
    /// A transport to `url`, adding `headers` to every request. Errors name the problem,
    /// never a header value.
    pub fn new(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
        signer: Option<Signer>,
    ) -> Result<Transport, String> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| format!("url is not a valid URL: {e}"))?;
        if uri.host().is_none() {
            return Err("url has no host".into());
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let n = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("header name {name:?} is not valid"))?;
            let mut v = HeaderValue::try_from(value.as_str())
                .map_err(|_| format!("a value of header {name:?} is not valid"))?;
            v.set_sensitive(true);
            map.append(n, v);
        }
        let connector = crate::upstream::tls::connector(timeout, None)
            .map_err(|e| format!("TLS setup: {e}"))?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Transport {
            client,
            uri,
            headers: map,
            timeout,
            signer,
        })
    }

    /// One attempt at delivering `rendered`, whose message id is `id`.
    pub async fn post(&self, id: &str, rendered: &Rendered) -> Outcome {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, rendered.content_type.as_str())
            .header(
                header::USER_AGENT,
                concat!("stevedore/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(rendered.body.clone()))
            .expect("a POST with a parsed URI is a valid request");
        let h = req.headers_mut();
        for (name, value) in &rendered.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                h.insert(n, v);
            }
        }
        for (name, value) in &self.headers {
            h.append(name, value.clone());
        }
        if let Some(signer) = &self.signer {
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let sig = signer.signature(id, ts, &rendered.body);
            if let Ok(v) = HeaderValue::try_from(id) {
                h.insert("webhook-id", v);
            }
            h.insert("webhook-timestamp", HeaderValue::from(ts));
            let mut v = HeaderValue::try_from(sig).expect("base64 is a valid header value");
            v.set_sensitive(true);
            h.insert("webhook-signature", v);
        }
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => {
                return Outcome::Retry {
                    status: None,
                    error: format!("no answer within {:?}", self.timeout),
                    retry_after: None,
                };
            }
            Ok(Err(e)) => {
                return Outcome::Retry {
                    status: None,
                    error: error_chain(&e),
                    retry_after: None,
                };
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The body is not read: dropping the response closes or recycles the connection.
        drop(resp);
        classify(status, retry_after)
    }
}

/// distribution's rule (2xx and 3xx are delivered) and ours for the rest.
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Outcome {
    let code = status.as_u16();
    if (200..400).contains(&code) {
        Outcome::Delivered(code)
    } else if (400..500).contains(&code) && code != 408 && code != 429 {
        Outcome::Rejected(code)
    } else {
        Outcome::Retry {
            status: Some(code),
            error: format!("answered {status}"),
            retry_after,
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// An error and its causes, on one line (hyper's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_like_distribution_and_beyond() {
        assert_eq!(classify(StatusCode::OK, None), Outcome::Delivered(200));
        assert_eq!(
            classify(StatusCode::MOVED_PERMANENTLY, None),
            Outcome::Delivered(301)
        );
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, None),
            Outcome::Rejected(400)
        );
        assert_eq!(
            classify(StatusCode::NOT_FOUND, None),
            Outcome::Rejected(404)
        );
        for code in [408u16, 429, 500, 502, 503] {
            let s = StatusCode::from_u16(code).expect("code");
            assert!(
                matches!(classify(s, None), Outcome::Retry { status: Some(c), .. } if c == code),
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(100));
        let d = parse_retry_after(&later).expect("date");
        assert!(d > Duration::from_secs(90) && d <= Duration::from_secs(100));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
