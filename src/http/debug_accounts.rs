//! `POST /debug/accounts` on the debug listener: one change (or listing) of `auth.builtin`'s
//! users and roles, for `stevedore user …` / `stevedore role …` while the server holds the
//! index. The body is an [`AccountOp`] in JSON (passwords already bcrypt-hashed by the CLI);
//! the answer is the command's output, or its refusal with a 4xx. The listener's own rule
//! applies (the debug token, or a loopback listener). Also the client side.

use super::body::Body;
use crate::App;
use crate::auth::builtin::manage::{self, AccountOp};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Largest request body accepted.
const MAX_BYTES: usize = 64 * 1024;

pub async fn accounts(app: &App, req: Request<Incoming>) -> Response<Body> {
    let text = super::debug::text;
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("the request could not be read (at most {MAX_BYTES} bytes): {e}\n"),
            );
        }
    };
    let op: AccountOp = match serde_json::from_slice(&body) {
        Ok(op) => op,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("not an account operation: {e}\n"),
            );
        }
    };
    let result = match app.auth.as_ref().and_then(|a| a.builtin()) {
        Some(b) => b.manage(&op),
        // Users can be prepared before auth.builtin is switched on.
        None => manage::apply(&app.depot.index, &op),
    };
    match result {
        Ok(out) => text(StatusCode::OK, "text/plain", out),
        Err(e) => text(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

/// Asks a running stevedore's debug listener at `addr` to apply `op`; returns its output.
pub async fn request_accounts(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    op: &AccountOp,
) -> Result<String, String> {
    let body = serde_json::to_vec(op).expect("operations serialize");
    super::debug::post_body(addr, token, "/debug/accounts", body.into())
        .await
        .map_err(|e| e.replace("the server answered", "the running server answered"))
}
