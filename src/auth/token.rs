//! Bearer token verification compatible with distribution's `auth.token`: JWTs signed (RS256,
//! RS384, RS512, ES256 or ES384) by a key of a certificate in `rootcertbundle`, or by the leaf
//! of an `x5c` header chain that a bundle certificate signed; `iss` must be the configured
//! issuer, `aud` must name the service, `exp` (required) and `nbf` are checked with 60 s of
//! leeway. The `access` claim (`[{"type":"repository","name":"a/b","actions":["pull"]}]`, `"*"`
//! for every action) is what the token grants.
//!
//! A token's `kid` is not used to pick the key: every bundle key of the right kind is tried,
//! which accepts whatever distribution accepts by `kid` (libtrust key IDs of bundle keys).

use super::{Access, Action, Actions, AuthSetupError};
use crate::config::TokenAuth;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use std::time::{Duration, SystemTime};
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};

/// Clock skew tolerated on `exp` and `nbf` (distribution's).
const LEEWAY_SECS: u64 = 60;
/// Longest token accepted.
const MAX_TOKEN_LEN: usize = 64 * 1024;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

/// A public key that can verify tokens.
#[derive(Clone)]
enum PublicKey {
    Rsa(DecodingKey),
    P256(DecodingKey),
    P384(DecodingKey),
}

impl PublicKey {
    fn of(cert: &Certificate) -> Option<PublicKey> {
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let bits = spki.subject_public_key.raw_bytes();
        if spki.algorithm.oid == RSA_ENCRYPTION {
            return Some(PublicKey::Rsa(DecodingKey::from_rsa_der(bits)));
        }
        if spki.algorithm.oid == EC_PUBLIC_KEY {
            let curve: ObjectIdentifier = spki.algorithm.parameters.as_ref()?.decode_as().ok()?;
            if curve == P256 {
                return Some(PublicKey::P256(DecodingKey::from_ec_der(bits)));
            }
            if curve == P384 {
                return Some(PublicKey::P384(DecodingKey::from_ec_der(bits)));
            }
        }
        None
    }

    /// The key, when it verifies `alg`.
    fn for_alg(&self, alg: Algorithm) -> Option<&DecodingKey> {
        match (self, alg) {
            (PublicKey::Rsa(k), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
            | (PublicKey::P256(k), Algorithm::ES256)
            | (PublicKey::P384(k), Algorithm::ES384) => Some(k),
            _ => None,
        }
    }

    /// Whether this key signed `cert`.
    fn signed(&self, cert: &Certificate) -> bool {
        let Ok(tbs) = cert.tbs_certificate.to_der() else {
            return false;
        };
        let Some(sig) = cert.signature.as_bytes() else {
            return false;
        };
        let oid = cert.signature_algorithm.oid;
        let (alg, sig) = if oid == SHA256_RSA {
            (Algorithm::RS256, sig.to_vec())
        } else if oid == SHA384_RSA {
            (Algorithm::RS384, sig.to_vec())
        } else if oid == SHA512_RSA {
            (Algorithm::RS512, sig.to_vec())
        } else if oid == ECDSA_SHA256 {
            match ecdsa_der_to_fixed(sig, 32) {
                Some(s) => (Algorithm::ES256, s),
                None => return false,
            }
        } else if oid == ECDSA_SHA384 {
            match ecdsa_der_to_fixed(sig, 48) {
                Some(s) => (Algorithm::ES384, s),
                None => return false,
            }
        } else {
            return false;
        };
        let Some(key) = self.for_alg(alg) else {
            return false;
        };
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig);
        jsonwebtoken::crypto::verify(&sig, &tbs, key, alg).unwrap_or(false)
    }
}

/// An ECDSA signature `SEQUENCE { INTEGER r, INTEGER s }` as JWS's fixed `r || s`.
fn ecdsa_der_to_fixed(der: &[u8], size: usize) -> Option<Vec<u8>> {
    fn len(b: &[u8]) -> Option<(usize, &[u8])> {
        let (&first, rest) = b.split_first()?;
        if first < 0x80 {
            return Some((first as usize, rest));
        }
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        let v = rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        Some((v, &rest[n..]))
    }
    fn int(b: &[u8], size: usize) -> Option<(Vec<u8>, &[u8])> {
        let (&tag, rest) = b.split_first()?;
        if tag != 0x02 {
            return None;
        }
        let (l, rest) = len(rest)?;
        if rest.len() < l {
            return None;
        }
        let (v, rest) = rest.split_at(l);
        let v = match v.iter().position(|&x| x != 0) {
            Some(i) => &v[i..],
            None => &[][..],
        };
        if v.len() > size {
            return None;
        }
        let mut out = vec![0u8; size - v.len()];
        out.extend_from_slice(v);
        Some((out, rest))
    }
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (l, body) = len(rest)?;
    if body.len() != l {
        return None;
    }
    let (mut r, body) = int(body, size)?;
    let (s, body) = int(body, size)?;
    if !body.is_empty() {
        return None;
    }
    r.extend_from_slice(&s);
    Some(r)
}

fn valid_now(cert: &Certificate) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let v = &cert.tbs_certificate.validity;
    let leeway = Duration::from_secs(LEEWAY_SECS);
    v.not_before.to_unix_duration() <= now + leeway
        && now <= v.not_after.to_unix_duration() + leeway
}

fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == BASIC_CONSTRAINTS)
        .filter_map(|e| {
            x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()).ok()
        })
        .any(|bc| bc.ca)
}

/// A trusted certificate of the bundle.
struct Root {
    der: Vec<u8>,
    key: PublicKey,
}

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ResourceActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    access: Option<Vec<ResourceActions>>,
}

/// What a verified token grants.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub subject: Option<String>,
    access: Vec<ResourceActions>,
}

impl Grant {
    pub(crate) fn from_claims(subject: Option<String>, access: Vec<ResourceActions>) -> Grant {
        Grant {
            subject: subject.filter(|s| !s.is_empty()),
            access,
        }
    }

    /// Whether the token grants every action of `a`.
    pub(crate) fn allows(&self, a: &Access) -> bool {
        match &a.repo {
            None => self.access.iter().any(|r| {
                r.kind == "registry" && r.name == "catalog" && r.actions.iter().any(|x| x == "*")
            }),
            Some(repo) => {
                let mut granted = Actions::default();
                for r in self
                    .access
                    .iter()
                    .filter(|r| r.kind == "repository" && r.name == repo.as_str())
                {
                    for x in &r.actions {
                        match x.as_str() {
                            "*" => granted = Actions::ALL,
                            other => {
                                if let Some(act) = Action::ALL.iter().find(|a| a.as_str() == other)
                                {
                                    granted.insert(*act);
                                }
                            }
                        }
                    }
                }
                granted.covers(a.actions)
            }
        }
    }
}

/// Verifies bearer tokens against `auth.token`'s settings.
pub struct TokenVerifier {
    realm: String,
    service: String,
    issuer: String,
    roots: Vec<Root>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("realm", &self.realm)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl TokenVerifier {
    /// Reads the certificate bundle; it must hold at least one certificate with an RSA, P-256
    /// or P-384 key.
    pub fn open(c: &TokenAuth) -> Result<TokenVerifier, AuthSetupError> {
        let err = |message: String| AuthSetupError::CertBundle {
            path: c.rootcertbundle.display().to_string(),
            message,
        };
        let pem = std::fs::read(&c.rootcertbundle).map_err(|e| err(e.to_string()))?;
        let mut roots = Vec::new();
        for (i, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let der = der.map_err(|e| err(format!("certificate {i}: {e:?}")))?;
            let cert = Certificate::from_der(der.as_ref())
                .map_err(|e| err(format!("certificate {i}: {e}")))?;
            let key = PublicKey::of(&cert).ok_or_else(|| {
                err(format!(
                    "certificate {i}: only RSA, P-256 and P-384 keys are supported"
                ))
            })?;
            roots.push(Root {
                der: der.as_ref().to_vec(),
                key,
            });
        }
        if roots.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        Ok(TokenVerifier {
            realm: c.realm.clone(),
            service: c.service.clone(),
            issuer: c.issuer.clone(),
            roots,
        })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The keys a token with `x5c` header `chain` may be signed by: its leaf's, when the chain
    /// leads to the bundle.
    fn chain_key(&self, chain: &[String]) -> Result<PublicKey, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let certs = chain
            .iter()
            .take(8)
            .map(|c| {
                let der = b64.decode(c).map_err(|_| "x5c: bad base64".to_owned())?;
                let cert = Certificate::from_der(&der).map_err(|e| format!("x5c: {e}"))?;
                Ok((der, cert))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let (Some((_, leaf)), Some((last_der, last))) = (certs.first(), certs.last()) else {
            return Err("x5c: empty chain".into());
        };
        if !certs.iter().all(|(_, c)| valid_now(c)) {
            return Err("x5c: a certificate of the chain is expired or not yet valid".into());
        }
        for pair in certs.windows(2) {
            let (child, parent) = (&pair[0].1, &pair[1].1);
            let signed = is_ca(parent) && PublicKey::of(parent).is_some_and(|k| k.signed(child));
            if !signed {
                return Err("x5c: the chain is broken".into());
            }
        }
        let trusted = self
            .roots
            .iter()
            .any(|r| r.der == *last_der || r.key.signed(last));
        if !trusted {
            return Err("x5c: the chain does not lead to auth.token.rootcertbundle".into());
        }
        PublicKey::of(leaf).ok_or_else(|| "x5c: unsupported leaf key".into())
    }

    /// Verifies `token`; returns what it grants, or why it is not acceptable.
    pub(crate) fn verify(&self, token: &str) -> Result<Grant, String> {
        if token.len() > MAX_TOKEN_LEN {
            return Err("token too long".into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed: {e}"))?;
        let alg = header.alg;
        if !matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::ES256
                | Algorithm::ES384
        ) {
            return Err(format!("signing algorithm {alg:?} is not accepted"));
        }
        let keys: Vec<PublicKey> = match &header.x5c {
            Some(chain) => vec![self.chain_key(chain)?],
            None => self.roots.iter().map(|r| r.key.clone()).collect(),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.service]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        for key in keys.iter().filter_map(|k| k.for_alg(alg)) {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    return Ok(Grant::from_claims(
                        data.claims.sub,
                        data.claims.access.unwrap_or_default(),
                    ));
                }
                Err(e) => match e.kind() {
                    // Not this key: try the next.
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidKeyFormat => continue,
                    ErrorKind::ExpiredSignature => return Err("expired".into()),
                    ErrorKind::ImmatureSignature => return Err("not valid yet (nbf)".into()),
                    ErrorKind::InvalidIssuer => {
                        return Err(format!("issuer is not {:?}", self.issuer));
                    }
                    ErrorKind::InvalidAudience => {
                        return Err(format!("audience does not include {:?}", self.service));
                    }
                    ErrorKind::MissingRequiredClaim(c) => {
                        return Err(format!("no {c:?} claim"));
                    }
                    _ => return Err(format!("malformed: {e}")),
                },
            }
        }
        Err("signature not made by a key of auth.token.rootcertbundle".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_convert() {
        // r = 1, s = 0x80ff (needs a leading zero in DER)
        let der = [0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x03, 0x00, 0x80, 0xff];
        let fixed = ecdsa_der_to_fixed(&der, 4).unwrap();
        assert_eq!(fixed, vec![0, 0, 0, 1, 0, 0, 0x80, 0xff]);
        assert!(ecdsa_der_to_fixed(&der[..9], 4).is_none());
        assert!(ecdsa_der_to_fixed(&der, 1).is_none());
    }

    fn repo(s: &str) -> crate::oci::RepoName {
        crate::oci::RepoName::parse(s).unwrap()
    }

    #[test]
    fn grants() {
        let g = Grant::from_claims(
            Some("u".into()),
            vec![
                ResourceActions {
                    kind: "repository".into(),
                    name: "a".into(),
                    actions: vec!["pull".into()],
                },
                ResourceActions {
                    kind: "repository".into(),
                    name: "a".into(),
                    actions: vec!["push".into()],
                },
                ResourceActions {
                    kind: "repository".into(),
                    name: "b".into(),
                    actions: vec!["*".into()],
                },
                ResourceActions {
                    kind: "registry".into(),
                    name: "catalog".into(),
                    actions: vec!["pull".into()],
                },
            ],
        );
        assert!(g.allows(&Access::repository(repo("a"), Actions::PULL_PUSH)));
        assert!(!g.allows(&Access::repository(repo("a"), Actions::DELETE)));
        assert!(g.allows(&Access::repository(repo("b"), Actions::ALL)));
        assert!(!g.allows(&Access::repository(repo("c"), Actions::PULL)));
        assert!(!g.allows(&Access::catalog()));
    }
}
