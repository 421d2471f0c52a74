//! The HTTP client the S3 store speaks through: hyper with the upstreams' connector (rustls
//! with ring and the system's roots, connect timeout), so the store needs no second TLS
//! stack. Each request's response head must come within the request timeout; the body is
//! streamed as it arrives (object_store's retries and stall handling sit above this).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::TokioExecutor;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use std::time::Duration;

/// Makes the store's clients.
#[derive(Debug, Clone)]
pub(super) struct Connector {
    pub connect_timeout: Duration,
    /// Bounds the wait for a response's head.
    pub timeout: Duration,
    pub user_agent: ::http::HeaderValue,
}

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let tls = crate::upstream::tls::connector(self.connect_timeout, None).map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            }
        })?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(tls);
        Ok(HttpClient::new(Service {
            client,
            timeout: self.timeout,
            user_agent: self.user_agent.clone(),
        }))
    }
}

struct Service {
    client: Client<hyper_rustls::HttpsConnector<TcpConnector>, HttpRequestBody>,
    timeout: Duration,
    user_agent: ::http::HeaderValue,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3 HTTP client")
    }
}

fn kind(e: &hyper_util::client::legacy::Error) -> HttpErrorKind {
    if e.is_connect() {
        HttpErrorKind::Connect
    } else {
        HttpErrorKind::Request
    }
}

#[async_trait::async_trait]
impl HttpService for Service {
    async fn call(&self, mut req: HttpRequest) -> Result<HttpResponse, HttpError> {
        req.headers_mut()
            .entry(::http::header::USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(HttpError::new(kind(&e), e)),
            Err(elapsed) => return Err(HttpError::new(HttpErrorKind::Timeout, elapsed)),
        };
        let (parts, body) = resp.into_parts();
        let body = body.map_err(|e| {
            let kind = if e.is_timeout() {
                HttpErrorKind::Timeout
            } else {
                HttpErrorKind::Interrupted
            };
            HttpError::new(kind, e)
        });
        Ok(HttpResponse::from_parts(
            parts,
            HttpResponseBody::new(body.map_frame(|f| f.map_data(Bytes::from))),
        ))
    }
}
