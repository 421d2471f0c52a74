//! Reading upstream response bodies: as a stream whose every chunk must come within the
//! stall timeout and which must reach its Content-Length (blobs), whole but capped
//! (manifests, tag lists), or as a short excerpt for error messages. Counts received bytes
//! in the `upstream_bytes` metric.

use super::error::UpstreamError;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus::IntCounter;
use std::time::Duration;

/// How much of an error body we read for the message.
const EXCERPT_READ: usize = 4096;
/// How much of it we keep in the message.
const EXCERPT_KEEP: usize = 300;

/// An upstream body being read chunk by chunk: each chunk is due within the stall
/// timeout, and the end is checked against the Content-Length.
struct TimedBody {
    body: Option<Incoming>,
    received: u64,
    expected: Option<u64>,
    stall: Duration,
    counter: Option<IntCounter>,
}

impl TimedBody {
    fn new(
        body: Incoming,
        expected: Option<u64>,
        stall: Duration,
        counter: Option<IntCounter>,
    ) -> Self {
        TimedBody {
            body: Some(body),
            received: 0,
            expected,
            stall,
            counter,
        }
    }

    /// The next data chunk; `None` once the body ended well; after an error, `None`.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        let body = self.body.as_mut()?;
        loop {
            let frame = match tokio::time::timeout(self.stall, body.frame()).await {
                Err(_) => return self.fail(UpstreamError::Timeout("body stalled")),
                Ok(None) => return self.finish(),
                Ok(Some(Err(e))) => {
                    let err = UpstreamError::from_body(&e, self.received, self.expected);
                    return self.fail(err);
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if data.is_empty() {
                continue;
            }
            self.received += data.len() as u64;
            if let Some(counter) = &self.counter {
                counter.inc_by(data.len() as u64);
            }
            return Some(Ok(data));
        }
    }

    fn fail(&mut self, err: UpstreamError) -> Option<Result<Bytes, UpstreamError>> {
        self.body = None;
        Some(Err(err))
    }

    /// The body ended: fine unless it fell short of its Content-Length.
    fn finish(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        self.body = None;
        match self.expected {
            Some(len) if self.received != len => Some(Err(UpstreamError::Body(format!(
                "truncated: received {} of {len} bytes",
                self.received
            )))),
            _ => None,
        }
    }
}

/// The body as a stream of chunks, each due within `stall`; errors end the stream.
pub fn stream(
    body: Incoming,
    expected: Option<u64>,
    stall: Duration,
    counter: IntCounter,
) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    let timed = TimedBody::new(body, expected, stall, Some(counter));
    stream::unfold(timed, |mut timed| async move {
        let item = timed.next_chunk().await?;
        Some((item, timed))
    })
    .boxed()
}

/// The whole body, refused with `TooLarge` past `cap` bytes (before reading when the
/// Content-Length says so).
pub async fn read_capped(
    body: Incoming,
    expected: Option<u64>,
    cap: usize,
    stall: Duration,
    counter: Option<IntCounter>,
) -> Result<Bytes, UpstreamError> {
    if expected.is_some_and(|len| len > cap as u64) {
        return Err(UpstreamError::TooLarge);
    }
    let mut timed = TimedBody::new(body, expected, stall, counter);
    let mut buf = BytesMut::with_capacity(expected.map_or(8192, |len| len as usize));
    while let Some(chunk) = timed.next_chunk().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > cap {
            return Err(UpstreamError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A short, printable excerpt of an error body: `CODE: message` of the first OCI error when
/// the body is OCI error JSON, else the start of the text. Never fails.
pub async fn excerpt(body: Incoming, stall: Duration) -> String {
    let mut timed = TimedBody::new(body, None, stall, None);
    let mut buf = Vec::new();
    while let Some(Ok(chunk)) = timed.next_chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= EXCERPT_READ {
            break;
        }
    }
    summarize(&buf)
}

fn summarize(raw: &[u8]) -> String {
    if let Some(summary) = oci_error_summary(raw) {
        return summary;
    }
    let text = String::from_utf8_lossy(raw);
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(EXCERPT_KEEP)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT_KEEP {
        out.push('…');
    }
    out
}

fn oci_error_summary(raw: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let first = value.get("errors")?.as_array()?.first()?;
    let code = first.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let message = first.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let summary = match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.to_string(),
        _ => message.to_string(),
    };
    Some(summary.chars().take(EXCERPT_KEEP).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let oci = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        assert_eq!(
            summarize(oci),
            "DENIED: requested access to the resource is denied"
        );
        assert_eq!(summarize(b"  upstream broke\n"), "upstream broke");
        let long = vec![b'x'; 1000];
        assert_eq!(summarize(&long).chars().count(), EXCERPT_KEEP + 1);
        assert_eq!(summarize(&[0xff, b'a']), "\u{fffd}a");
    }
}
