//! `POST /debug/warm` on the debug listener: warms a list of images now and answers with the
//! run's report (JSON). The body is a warm list; an empty body warms `proxy.warm.file`. Also
//! the client side, for `stevedore warm FILE`. The listener's own rule applies (the debug
//! token, or a loopback listener): warming makes the mirror contact its upstreams.

use super::body::{self, Body};
use crate::App;
use crate::mirror::warm::{self, Trigger};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Largest warm list accepted in a request.
const MAX_LIST_BYTES: usize = 1024 * 1024;

pub async fn warm(app: &App, req: Request<Incoming>) -> Response<Body> {
    let Some(mirror) = app.mirror.clone() else {
        return super::debug::text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "this registry mirrors nothing (no proxy section)\n",
        );
    };
    let limited = http_body_util::Limited::new(req.into_body(), MAX_LIST_BYTES);
    let list = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return super::debug::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("the warm list could not be read (at most {MAX_LIST_BYTES} bytes): {e}\n"),
            );
        }
    };
    let entries = if list.iter().all(u8::is_ascii_whitespace) {
        match &app.config.proxy.warm.file {
            Some(path) => warm::read_list(path),
            None => Err("the request sent no list and proxy.warm.file is not set".to_owned()),
        }
    } else {
        std::str::from_utf8(&list)
            .map_err(|_| "the warm list is not UTF-8".to_owned())
            .and_then(|s| crate::oci::image_list::parse_list(s).map_err(|e| e.to_string()))
    };
    let entries = match entries {
        Ok(e) => e,
        Err(e) => {
            return super::debug::text(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"));
        }
    };
    let report = mirror.warm(&entries, Trigger::Request).await;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(
            serde_json::to_vec(&report).expect("report serializes"),
        ))
        .expect("static headers are valid")
}

/// Sends the warm list `list` to a running stevedore's debug listener; returns its report.
pub async fn request_warm(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    list: String,
) -> Result<warm::WarmReport, String> {
    let body = super::debug::post_body(addr, token, "/debug/warm", list.into()).await?;
    serde_json::from_str(&body).map_err(|e| format!("the server's report is not JSON: {e}: {body}"))
}
