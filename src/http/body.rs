//! Body helpers in one place: the response body type, small fixed bodies, streamed bodies,
//! the request body as a stream of bytes, and collecting a request body under a size cap.

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};

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

/// The data of a request body as a stream of chunks (trailers are ignored).
pub fn request_stream(body: Incoming) -> impl Stream<Item = Result<Bytes, hyper::Error>> + Send {
    http_body_util::BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(e)),
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body broke off: {0}")]
    Body(#[from] hyper::Error),
}

/// Reads a whole request body, refusing one larger than `limit` without buffering past it.
pub async fn collect_limited(body: Incoming, limit: usize) -> Result<Bytes, CollectError> {
    let mut stream = std::pin::pin!(request_stream(body));
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
