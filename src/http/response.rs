//! Building responses: the common headers, and the one place a `RegistryError` becomes a
//! response (with its JSON envelope, status and extra headers).

use super::body::{self, Body};
use crate::error::RegistryError;
use http::{HeaderValue, Response, StatusCode, header};

pub const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

pub fn builder(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(API_VERSION.0, API_VERSION.1)
}

pub fn error(e: &RegistryError) -> Response<Body> {
    let body = e.body();
    let mut resp = builder(e.status())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(body::full(body))
        .expect("static headers are valid");
    for (name, value) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().append(name.clone(), v);
        }
    }
    resp
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("response JSON serializes");
    builder(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(body::full(bytes))
        .expect("static headers are valid")
}

/// An empty response with a `Content-Length: 0`.
pub fn empty(status: StatusCode) -> http::response::Builder {
    builder(status).header(header::CONTENT_LENGTH, 0)
}
