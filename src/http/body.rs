//! Body helpers in one place: the response body type, small fixed bodies, streamed bodies,
//! the request body as a stream of bytes, and collecting a request body under a size cap.

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body that streams `stream`; an error ends the response abruptly, so a client never takes
/// a short or damaged body for a whole one.
pub fn streamed<S, E>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data).map_err(Into::into)).boxed_unsync()
}

/// Why a request body ended before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Broken(#[from] hyper::Error),
    /// The client sent no byte for this long (a body shorter than its `Content-Length`, or a
    /// stalled client).
    #[error("the client sent no body data for {}s", .0.as_secs_f64())]
    Idle(Duration),
}

/// The data of a request body as a stream of chunks (trailers are ignored). A body that sends
/// nothing for `idle` ends with [`BodyError::Idle`], so a client that announces more than it
/// sends cannot hold a handler (and an upload lock) forever.
pub fn request_stream(
    body: Incoming,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send {
    let frames = http_body_util::BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(BodyError::Broken(e))),
        }
    });
    futures::stream::unfold(Some(Box::pin(frames)), move |state| async move {
        let mut frames = state?;
        match tokio::time::timeout(idle, frames.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(frames))),
            // Nothing after an error: the stream ends with it.
            Ok(Some(Err(e))) => Some((Err(e), None)),
            Ok(None) => None,
            Err(_) => Some((Err(BodyError::Idle(idle)), None)),
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body broke off: {0}")]
    Body(#[from] BodyError),
}

/// Reads a whole request body, refusing one larger than `limit` without buffering past it, and
/// one that stalls for `idle`.
pub async fn collect_limited(
    body: Incoming,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, CollectError> {
    let mut stream = std::pin::pin!(request_stream(body, idle));
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > limit {
            return Err(CollectError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
