//! Building responses: the common headers, and the one place a `RegistryError` becomes a
//! response (with its JSON envelope, status and extra headers).

use super::body::{self, Body};
use crate::error::RegistryError;
use http::{HeaderValue, Response, StatusCode, header};

pub const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");
const API_VERSION_NAME: header::HeaderName = header::HeaderName::from_static(API_VERSION.0);
const API_VERSION_VALUE: HeaderValue = HeaderValue::from_static(API_VERSION.1);

/// The digest of the content a response is about.
pub const CONTENT_DIGEST: header::HeaderName =
    header::HeaderName::from_static("docker-content-digest");

/// The header naming an upload session.
pub const UPLOAD_UUID: header::HeaderName = header::HeaderName::from_static("docker-upload-uuid");

/// Adds the headers every response carries.
pub fn common_headers(h: &mut http::HeaderMap) {
    h.insert(API_VERSION_NAME, API_VERSION_VALUE);
}

pub fn builder(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(API_VERSION_NAME, API_VERSION_VALUE)
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
    if let Some(at) = &e.upload {
        for (name, value) in [
            (UPLOAD_UUID, at.id.clone()),
            (header::RANGE, super::range::upload_range(at.offset)),
        ] {
            if let Ok(v) = HeaderValue::try_from(value) {
                resp.headers_mut().append(name, v);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorCode, UploadPosition};

    /// Where an upload stands reaches the client as the headers of an upload's status.
    #[test]
    fn upload_position_becomes_headers() {
        let at = |offset| {
            let e = RegistryError::new(ErrorCode::RangeInvalid, "chunk out of order").at_upload(
                UploadPosition {
                    id: "u1".to_owned(),
                    offset,
                },
            );
            let r = error(&e);
            assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
            assert_eq!(r.headers()[UPLOAD_UUID], "u1");
            r.headers()[header::RANGE].to_str().unwrap().to_owned()
        };
        assert_eq!(at(4000), "0-3999");
        assert_eq!(at(1), "0-0");
        assert_eq!(at(0), "0-0");
        let plain = error(&RegistryError::new(ErrorCode::RangeInvalid, "bad"));
        assert!(plain.headers().get(UPLOAD_UUID).is_none());
        assert!(plain.headers().get(header::RANGE).is_none());
    }
}
