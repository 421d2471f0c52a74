//! `Endpoint::parse`: the pure mapping of a method and path onto the distribution API's
//! operations. Repository names contain slashes, so the path is split at its last segment and
//! the kind of endpoint is read from what precedes it.

use http::Method;

/// One operation of the API, named after the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET|HEAD /v2/`
    ApiVersion,
    /// `GET /v2/_catalog`
    Catalog,
    ListTags {
        name: String,
    },
    GetManifest {
        name: String,
        reference: String,
    },
    HeadManifest {
        name: String,
        reference: String,
    },
    PutManifest {
        name: String,
        reference: String,
    },
    DeleteManifest {
        name: String,
        reference: String,
    },
    GetBlob {
        name: String,
        digest: String,
    },
    HeadBlob {
        name: String,
        digest: String,
    },
    DeleteBlob {
        name: String,
        digest: String,
    },
    /// `POST /v2/<name>/blobs/uploads/` (also a mount or a monolithic upload, by query)
    StartUpload {
        name: String,
    },
    GetUpload {
        name: String,
        id: String,
    },
    PatchUpload {
        name: String,
        id: String,
    },
    PutUpload {
        name: String,
        id: String,
    },
    DeleteUpload {
        name: String,
        id: String,
    },
    GetReferrers {
        name: String,
        digest: String,
    },
    /// `GET /auth/token`: `auth.builtin`'s token endpoint (distribution's token protocol).
    IssueToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No such endpoint.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
}

impl Endpoint {
    pub fn parse(method: &Method, path: &str) -> Result<Endpoint, RouteError> {
        if path == crate::auth::builtin::TOKEN_PATH {
            return on(method, &[Method::GET]).map(|_| Endpoint::IssueToken);
        }
        let rest = path.strip_prefix("/v2").ok_or(RouteError::NotFound)?;
        if rest.is_empty() || rest == "/" {
            return on(method, &[Method::GET, Method::HEAD]).map(|_| Endpoint::ApiVersion);
        }
        let rest = rest.strip_prefix('/').ok_or(RouteError::NotFound)?;
        if rest == "_catalog" {
            return on(method, &[Method::GET]).map(|_| Endpoint::Catalog);
        }
        let (prefix, last) = rest.rsplit_once('/').ok_or(RouteError::NotFound)?;
        let last = percent_decode(last);
        let named = |suffix: &str| {
            prefix
                .strip_suffix(suffix)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
        };
        if let Some(name) = named("/tags").filter(|_| last == "list") {
            return on(method, &[Method::GET]).map(|_| Endpoint::ListTags { name });
        }
        if let Some(name) = named("/manifests").filter(|_| !last.is_empty()) {
            let reference = last;
            return match *method {
                Method::GET => Ok(Endpoint::GetManifest { name, reference }),
                Method::HEAD => Ok(Endpoint::HeadManifest { name, reference }),
                Method::PUT => Ok(Endpoint::PutManifest { name, reference }),
                Method::DELETE => Ok(Endpoint::DeleteManifest { name, reference }),
                _ => Err(RouteError::MethodNotAllowed),
            };
        }
        if let Some(name) = named("/blobs/uploads") {
            if last.is_empty() {
                return on(method, &[Method::POST]).map(|_| Endpoint::StartUpload { name });
            }
            let id = last;
            return match *method {
                Method::GET => Ok(Endpoint::GetUpload { name, id }),
                Method::PATCH => Ok(Endpoint::PatchUpload { name, id }),
                Method::PUT => Ok(Endpoint::PutUpload { name, id }),
                Method::DELETE => Ok(Endpoint::DeleteUpload { name, id }),
                _ => Err(RouteError::MethodNotAllowed),
            };
        }
        if let Some(name) = named("/blobs") {
            if last == "uploads" && *method == Method::POST {
                return Ok(Endpoint::StartUpload { name });
            }
            if last.is_empty() {
                return Err(RouteError::NotFound);
            }
            let digest = last;
            return match *method {
                Method::GET => Ok(Endpoint::GetBlob { name, digest }),
                Method::HEAD => Ok(Endpoint::HeadBlob { name, digest }),
                Method::DELETE => Ok(Endpoint::DeleteBlob { name, digest }),
                _ => Err(RouteError::MethodNotAllowed),
            };
        }
        if let Some(name) = named("/referrers").filter(|_| !last.is_empty()) {
            return on(method, &[Method::GET])
                .map(|_| Endpoint::GetReferrers { name, digest: last });
        }
        Err(RouteError::NotFound)
    }

    /// A short, bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::ApiVersion => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::ListTags { .. } => "tags",
            Endpoint::GetManifest { .. }
            | Endpoint::HeadManifest { .. }
            | Endpoint::PutManifest { .. }
            | Endpoint::DeleteManifest { .. } => "manifest",
            Endpoint::GetBlob { .. } | Endpoint::HeadBlob { .. } | Endpoint::DeleteBlob { .. } => {
                "blob"
            }
            Endpoint::StartUpload { .. }
            | Endpoint::GetUpload { .. }
            | Endpoint::PatchUpload { .. }
            | Endpoint::PutUpload { .. }
            | Endpoint::DeleteUpload { .. } => "upload",
            Endpoint::GetReferrers { .. } => "referrers",
            Endpoint::IssueToken => "token",
        }
    }
}

fn on(method: &Method, allowed: &[Method]) -> Result<(), RouteError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(RouteError::MethodNotAllowed)
    }
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(m: Method, path: &str) -> Result<Endpoint, RouteError> {
        Endpoint::parse(&m, path)
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn token_endpoint() {
        assert_eq!(p(Method::GET, "/auth/token"), Ok(Endpoint::IssueToken));
        assert_eq!(
            p(Method::POST, "/auth/token"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(p(Method::GET, "/auth/token/x"), Err(RouteError::NotFound));
    }

    #[test]
    fn table() {
        use Endpoint::*;
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let cases: Vec<(Method, String, Result<Endpoint, RouteError>)> = vec![
            (Method::GET, s("/v2/"), Ok(ApiVersion)),
            (Method::HEAD, s("/v2"), Ok(ApiVersion)),
            (Method::POST, s("/v2/"), Err(RouteError::MethodNotAllowed)),
            (Method::GET, s("/v2/_catalog"), Ok(Catalog)),
            (
                Method::GET,
                s("/v2/a/b/tags/list"),
                Ok(ListTags { name: s("a/b") }),
            ),
            (
                Method::GET,
                s("/v2/a/manifests/latest"),
                Ok(GetManifest {
                    name: s("a"),
                    reference: s("latest"),
                }),
            ),
            (
                Method::HEAD,
                s("/v2/x/manifests/manifests/v1"),
                Ok(HeadManifest {
                    name: s("x/manifests"),
                    reference: s("v1"),
                }),
            ),
            (
                Method::PUT,
                format!("/v2/a/manifests/{d}"),
                Ok(PutManifest {
                    name: s("a"),
                    reference: s(d),
                }),
            ),
            (
                Method::DELETE,
                s("/v2/a/manifests/t"),
                Ok(DeleteManifest {
                    name: s("a"),
                    reference: s("t"),
                }),
            ),
            (
                Method::POST,
                s("/v2/a/manifests/t"),
                Err(RouteError::MethodNotAllowed),
            ),
            (
                Method::GET,
                format!("/v2/a/blobs/{d}"),
                Ok(GetBlob {
                    name: s("a"),
                    digest: s(d),
                }),
            ),
            (
                Method::GET,
                s("/v2/a/blobs/sha256%3Aab"),
                Ok(GetBlob {
                    name: s("a"),
                    digest: s("sha256:ab"),
                }),
            ),
            (
                Method::HEAD,
                format!("/v2/blobs/blobs/{d}"),
                Ok(HeadBlob {
                    name: s("blobs"),
                    digest: s(d),
                }),
            ),
            (
                Method::DELETE,
                format!("/v2/a/blobs/{d}"),
                Ok(DeleteBlob {
                    name: s("a"),
                    digest: s(d),
                }),
            ),
            (
                Method::POST,
                s("/v2/a/b/blobs/uploads/"),
                Ok(StartUpload { name: s("a/b") }),
            ),
            (
                Method::POST,
                s("/v2/a/b/blobs/uploads"),
                Ok(StartUpload { name: s("a/b") }),
            ),
            (
                Method::PATCH,
                s("/v2/a/blobs/uploads/u1"),
                Ok(PatchUpload {
                    name: s("a"),
                    id: s("u1"),
                }),
            ),
            (
                Method::PUT,
                s("/v2/a/blobs/uploads/u1"),
                Ok(PutUpload {
                    name: s("a"),
                    id: s("u1"),
                }),
            ),
            (
                Method::GET,
                s("/v2/a/blobs/uploads/u1"),
                Ok(GetUpload {
                    name: s("a"),
                    id: s("u1"),
                }),
            ),
            (
                Method::DELETE,
                s("/v2/a/blobs/uploads/u1"),
                Ok(DeleteUpload {
                    name: s("a"),
                    id: s("u1"),
                }),
            ),
            (
                Method::GET,
                format!("/v2/a/referrers/{d}"),
                Ok(GetReferrers {
                    name: s("a"),
                    digest: s(d),
                }),
            ),
            (
                Method::GET,
                s("/v2/manifests/latest"),
                Err(RouteError::NotFound),
            ),
            (Method::GET, s("/v2/a/unknown/x"), Err(RouteError::NotFound)),
            (Method::GET, s("/v3/"), Err(RouteError::NotFound)),
            (Method::GET, s("/v2/a/blobs/"), Err(RouteError::NotFound)),
        ];
        for (m, path, want) in cases {
            assert_eq!(p(m.clone(), &path), want, "{m} {path}");
        }
    }
}
