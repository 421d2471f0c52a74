//! Registry authentication, the parts that need no network: parsing `WWW-Authenticate`
//! challenges (Bearer realm/service/scope, Basic realm), building the token endpoint URL,
//! reading the token endpoint's JSON answer, and Basic credentials (redacted in Debug).
//! The token request itself is sent by the client in `mod.rs`, and tokens are kept by
//! `token_cache`.

use super::error::UpstreamError;
use super::token_cache::Token;
use crate::config::Secret;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Uri};
use std::time::Duration;

/// Lifetime of a token whose answer has no `expires_in` (Docker token spec default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// One challenge from a `WWW-Authenticate` header: lowercased scheme and parameters
/// (names lowercased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WwwAuthenticate {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl WwwAuthenticate {
    /// The value of a parameter, by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a 401 asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChallenge {
    /// Fetch a token from `realm` (for `service` and `scope`, when given).
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Send Basic credentials.
    Basic { realm: Option<String> },
}

/// The challenge to answer from the `WWW-Authenticate` headers of a 401: Bearer is preferred
/// over Basic; unknown schemes are ignored.
pub fn challenge_from_headers(headers: &HeaderMap) -> Option<AuthChallenge> {
    let all: Vec<WwwAuthenticate> = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect();
    let bearer = all.iter().filter(|c| c.scheme == "bearer").find_map(|c| {
        let realm = c.param("realm")?.to_string();
        Some(AuthChallenge::Bearer {
            realm,
            service: c.param("service").map(str::to_string),
            scope: c.param("scope").map(str::to_string),
        })
    });
    bearer.or_else(|| {
        all.iter()
            .find(|c| c.scheme == "basic")
            .map(|c| AuthChallenge::Basic {
                realm: c.param("realm").map(str::to_string),
            })
    })
}

/// Parses one `WWW-Authenticate` value into its challenges (RFC 9110 §11.6.1):
/// `Bearer realm="https://auth",service="registry",scope="repository:a/b:pull,push"`.
/// Quoted values may hold commas and backslash escapes; schemes and parameter names are
/// case-insensitive (returned lowercased). Garbage is skipped, never an error.
pub fn parse_challenges(value: &str) -> Vec<WwwAuthenticate> {
    let mut cur = Cursor { s: value, pos: 0 };
    let mut out = Vec::new();
    loop {
        cur.skip_while(|c| c == ',' || c.is_ascii_whitespace());
        if cur.at_end() {
            break;
        }
        let scheme = cur.token();
        if scheme.is_empty() {
            cur.bump();
            continue;
        }
        let scheme = scheme.to_ascii_lowercase();
        let params = parse_params(&mut cur);
        out.push(WwwAuthenticate { scheme, params });
    }
    out
}

/// Reads `name=value` pairs until the end or the start of the next challenge (a token not
/// followed by `=`). Stray characters are skipped.
fn parse_params(cur: &mut Cursor<'_>) -> Vec<(String, String)> {
    let mut params = Vec::new();
    loop {
        cur.skip_while(|c| c == ',' || c.is_ascii_whitespace());
        if cur.at_end() {
            break;
        }
        let start = cur.pos;
        let name = cur.token();
        if name.is_empty() {
            cur.bump();
            continue;
        }
        cur.skip_while(|c| c == ' ' || c == '\t');
        if cur.peek() != Some('=') {
            cur.pos = start;
            break;
        }
        cur.bump(); // '='
        cur.skip_while(|c| c == ' ' || c == '\t');
        let value = if cur.peek() == Some('"') {
            cur.quoted()
        } else {
            cur.take_while(|c| c != ',' && !c.is_ascii_whitespace())
                .to_string()
        };
        params.push((name.to_ascii_lowercase(), value));
    }
    params
}

/// A position in a header value.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !keep(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    fn skip_while(&mut self, skip: impl Fn(char) -> bool) {
        self.take_while(skip);
    }

    /// An RFC 9110 token (scheme or parameter name).
    fn token(&mut self) -> &'a str {
        self.take_while(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
    }

    /// A quoted string starting at the opening quote; unterminated runs to the end.
    fn quoted(&mut self) -> String {
        self.bump(); // opening quote
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.bump();
            match c {
                '"' => break,
                '\\' => {
                    if let Some(escaped) = self.peek() {
                        out.push(escaped);
                        self.bump();
                    }
                }
                _ => out.push(c),
            }
        }
        out
    }
}

/// The URL to GET a token from: `realm?service=…&scope=…`, one `scope` parameter per
/// space-separated scope. The realm must be an absolute http(s) URL.
pub fn token_url(realm: &str, service: Option<&str>, scope: &str) -> Result<Uri, UpstreamError> {
    let realm_uri: Uri = realm
        .parse()
        .map_err(|_| UpstreamError::Invalid(format!("bad token realm {realm:?}")))?;
    let scheme_ok = matches!(realm_uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || realm_uri.authority().is_none() {
        return Err(UpstreamError::Invalid(format!("bad token realm {realm:?}")));
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(service) = service {
        query.append_pair("service", service);
    }
    for one in scope.split_whitespace() {
        query.append_pair("scope", one);
    }
    let query = query.finish();
    let sep = if realm.contains('?') { '&' } else { '?' };
    let url = if query.is_empty() {
        realm.to_string()
    } else {
        format!("{realm}{sep}{query}")
    };
    url.parse()
        .map_err(|_| UpstreamError::Invalid(format!("bad token URL {url:?}")))
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Reads the token endpoint's JSON: `token` or `access_token`, and `expires_in` seconds
/// (60 when absent).
pub fn parse_token_answer(body: &[u8]) -> Result<Token, UpstreamError> {
    let answer: TokenAnswer = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::Invalid(format!("token endpoint answer is not JSON: {e}")))?;
    let value = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| UpstreamError::Invalid("token endpoint answer has no token".into()))?;
    let lifetime = answer
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Token::new(value, lifetime)
}

/// Username and password for an upstream; the password never shows in Debug output.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    password: Secret,
}

impl Credentials {
    pub fn new(username: String, password: Secret) -> Credentials {
        Credentials { username, password }
    }

    /// The `Authorization: Basic …` header value.
    pub fn basic_header(&self) -> Result<HeaderValue, UpstreamError> {
        let raw = format!("{}:{}", self.username, self.password.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
            .map_err(|_| UpstreamError::Invalid("credentials make a bad header".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(c: &WwwAuthenticate) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn docker_hub_bearer() {
        let v = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        let cs = parse_challenges(v);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].scheme, "bearer");
        assert_eq!(
            pairs(&cs[0]),
            vec![
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:library/alpine:pull"),
            ]
        );
    }

    #[test]
    fn quoted_commas_and_escapes() {
        let v = r#"Bearer realm="https://a/token", scope="repository:x/y:pull,push", error="say \"hi\"""#;
        let cs = parse_challenges(v);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].param("scope"), Some("repository:x/y:pull,push"));
        assert_eq!(cs[0].param("error"), Some(r#"say "hi""#));
        assert_eq!(cs[0].param("realm"), Some("https://a/token"));
    }

    #[test]
    fn case_insensitive_scheme_and_names() {
        let cs = parse_challenges(r#"BEARER Realm="r",SERVICE=svc"#);
        assert_eq!(cs[0].scheme, "bearer");
        assert_eq!(cs[0].param("realm"), Some("r"));
        assert_eq!(cs[0].param("service"), Some("svc"));
        let cs = parse_challenges(r#"basic realm="Registry Realm""#);
        assert_eq!(cs[0].scheme, "basic");
        assert_eq!(cs[0].param("realm"), Some("Registry Realm"));
    }

    #[test]
    fn several_challenges_in_one_value() {
        let v = r#"Basic realm="b", Bearer realm="https://t",service="s""#;
        let cs = parse_challenges(v);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].scheme, "basic");
        assert_eq!(pairs(&cs[0]), vec![("realm", "b")]);
        assert_eq!(cs[1].scheme, "bearer");
        assert_eq!(
            pairs(&cs[1]),
            vec![("realm", "https://t"), ("service", "s")]
        );
    }

    #[test]
    fn token68_and_bare_scheme_and_garbage() {
        let cs = parse_challenges("Negotiate, Basic dXNlcjpwYXNz==, Bearer realm=x");
        let schemes: Vec<&str> = cs.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, vec!["negotiate", "basic", "bearer"]);
        assert_eq!(cs[2].param("realm"), Some("x"));
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(" , ,").is_empty());
        // Unterminated quote and stray characters do not panic.
        let cs = parse_challenges(r#"Bearer realm="https://a, "#);
        assert_eq!(cs[0].param("realm"), Some("https://a, "));
        let _ = parse_challenges(r#"="" ,=,Bearer ="x" realm"#);
    }

    #[test]
    fn spaces_around_equals() {
        let cs = parse_challenges(r#"Bearer realm = "r" , service= s"#);
        assert_eq!(cs[0].param("realm"), Some("r"));
        assert_eq!(cs[0].param("service"), Some("s"));
    }

    #[test]
    fn bearer_preferred_over_basic() {
        let mut h = HeaderMap::new();
        h.append(
            "www-authenticate",
            HeaderValue::from_static(r#"Basic realm="b""#),
        );
        h.append(
            "www-authenticate",
            HeaderValue::from_static(r#"Bearer realm="https://t/token",scope="repository:a:pull""#),
        );
        assert_eq!(
            challenge_from_headers(&h),
            Some(AuthChallenge::Bearer {
                realm: "https://t/token".into(),
                service: None,
                scope: Some("repository:a:pull".into()),
            })
        );
        let mut h = HeaderMap::new();
        h.append(
            "www-authenticate",
            HeaderValue::from_static(r#"Basic realm="b""#),
        );
        assert_eq!(
            challenge_from_headers(&h),
            Some(AuthChallenge::Basic {
                realm: Some("b".into())
            })
        );
        assert_eq!(challenge_from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn token_url_building() {
        let u = token_url(
            "https://auth.docker.io/token",
            Some("registry.docker.io"),
            "repository:library/alpine:pull",
        )
        .unwrap();
        assert_eq!(
            u.to_string(),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull"
        );
        let u = token_url("http://h/t?x=1", None, "a b").unwrap();
        assert_eq!(u.to_string(), "http://h/t?x=1&scope=a&scope=b");
        assert!(token_url("/relative", None, "s").is_err());
        assert!(token_url("ftp://h/t", None, "s").is_err());
    }

    #[test]
    fn token_answers() {
        let t = parse_token_answer(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.value(), "abc");
        let t = parse_token_answer(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.value(), "xyz");
        assert!(parse_token_answer(br#"{"token":""}"#).is_err());
        assert!(parse_token_answer(b"not json").is_err());
    }

    #[test]
    fn credentials_redacted() {
        let c = Credentials::new("me".into(), "hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(
            c.basic_header().unwrap().to_str().unwrap(),
            "Basic bWU6aHVudGVyMg=="
        );
    }
}
