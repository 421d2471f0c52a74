//! `GET /auth/token`: `auth.builtin`'s token endpoint, in distribution's token protocol
//! (Basic credentials or none, `service`, any number of `scope`s; answers `token`,
//! `access_token`, `expires_in`, `issued_at`). What is granted is `auth::builtin`'s decision.

use super::{HandlerResult, Req};
use crate::App;
use crate::auth::TokenEndpointError;
use crate::auth::builtin::TokenRequestError;
use crate::error::{ErrorCode, RegistryError};
use http::StatusCode;

pub async fn issue(app: &App, req: &Req) -> HandlerResult {
    let Some(auth) = &app.auth else {
        return Err(not_here());
    };
    let scopes: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let authorization = req.header(http::header::AUTHORIZATION);
    let token = auth
        .issue_token(authorization, req.query("service"), &scopes)
        .await
        .map_err(|e| match e {
            TokenEndpointError::NotHere => not_here(),
            TokenEndpointError::Auth(a) => a.into(),
            TokenEndpointError::Request(TokenRequestError::BadRequest(m)) => {
                RegistryError::new(ErrorCode::Unsupported, m).with_status(StatusCode::BAD_REQUEST)
            }
            TokenEndpointError::Request(TokenRequestError::Unavailable(m)) => {
                RegistryError::internal(m)
            }
        })?;
    let mut resp = super::super::response::json(StatusCode::OK, &token);
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

fn not_here() -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        "this registry issues no tokens (auth.builtin is not configured)",
    )
    .with_status(StatusCode::NOT_FOUND)
}
