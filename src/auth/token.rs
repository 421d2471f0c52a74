//! Bearer token verification compatible with distribution's `auth.token`: JWTs signed (RS256,
//! RS384, RS512, ES256 or ES384) by a key of a certificate in `rootcertbundle`, or by the leaf
//! of an `x5c` header chain that a bundle certificate signed; `iss` must be the configured
//! issuer, `aud` must name the service, `exp` (required) and `nbf` are checked with 60 s of
//! leeway. The `access` claim (`[{"type":"repository","name":"a/b","actions":["pull"]}]`, `"*"`
//! for every action) is what the token grants.
//!
//! An `x5c` chain is validated by `rustls-webpki` against the bundle as trust anchors: validity
//! periods, CA basic constraints and path lengths, signatures; any extended key usage is
//! accepted (distribution asks Go for `ExtKeyUsageAny`). A `keyUsage` extension, when present,
//! must allow `digitalSignature` on the leaf and `keyCertSign` on the certificates above it.
//! Chain certificates must be X.509 v3 (webpki's rule; Go also accepts a v1 leaf).
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
use std::time::Duration;
use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::der::asn1::ObjectIdentifier;

/// Clock skew tolerated on `exp` and `nbf` (distribution's).
const LEEWAY_SECS: u64 = 60;
/// Longest token accepted.
const MAX_TOKEN_LEN: usize = 64 * 1024;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
/// Longest `x5c` chain accepted.
const MAX_CHAIN: usize = 8;

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
}

fn valid_now(cert: &Certificate) -> bool {
    let now = crate::clock::since_epoch();
    let v = &cert.tbs_certificate.validity;
    let leeway = Duration::from_secs(LEEWAY_SECS);
    v.not_before.to_unix_duration() <= now + leeway
        && now <= v.not_after.to_unix_duration() + leeway
}

/// Whether `cert`'s `keyUsage` extension, if it has one, allows what `allows` says.
fn key_usage_allows(
    cert: &Certificate,
    allows: fn(&x509_cert::ext::pkix::KeyUsage) -> bool,
) -> bool {
    let Some(ext) = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == KEY_USAGE)
    else {
        return true;
    };
    x509_cert::ext::pkix::KeyUsage::from_der(ext.extn_value.as_bytes()).is_ok_and(|ku| allows(&ku))
}

/// Any extended key usage will do (distribution verifies with Go's `ExtKeyUsageAny`).
struct AnyExtendedKeyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for id in iter {
            id?;
        }
        Ok(())
    }
}

/// Why webpki refused a chain, for the token's refusal.
fn chain_error(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } | E::CertNotValidYet { .. } => {
            "x5c: a certificate of the chain is expired or not yet valid".into()
        }
        E::UnknownIssuer => "x5c: the chain does not lead to auth.token.rootcertbundle".into(),
        E::CaUsedAsEndEntity => "x5c: the leaf is a CA certificate".into(),
        E::EndEntityUsedAsCa => "x5c: a certificate that is not a CA signed the chain".into(),
        E::PathLenConstraintViolated => "x5c: the chain breaks a CA's path length limit".into(),
        E::UnsupportedCertVersion => {
            "x5c: only X.509 v3 certificates are accepted (openssl x509 -req makes v1 without -extfile)"
                .into()
        }
        other => format!("x5c: the chain is not valid ({other:?})"),
    }
}

/// A trusted certificate of the bundle.
struct Root {
    der: Vec<u8>,
    key: PublicKey,
    anchor: rustls::pki_types::TrustAnchor<'static>,
}

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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

/// Verifies bearer tokens against `auth.token`'s settings (or `auth.builtin`'s own key).
pub struct TokenVerifier {
    realm: String,
    service: String,
    issuer: String,
    roots: Vec<Root>,
    /// A key trusted without a certificate (`auth.builtin`'s own), beside the roots'.
    own: Option<PublicKey>,
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
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| {
                    err(format!(
                        "certificate {i}: not usable as a trust anchor: {e}"
                    ))
                })?
                .to_owned();
            roots.push(Root {
                der: der.as_ref().to_vec(),
                key,
                anchor,
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
            own: None,
        })
    }

    /// A verifier of tokens signed by one P-256 key (`point`: its uncompressed SEC1 form), as
    /// `auth.builtin` issues them.
    pub(crate) fn for_p256(
        realm: &str,
        service: &str,
        issuer: &str,
        point: &[u8],
    ) -> TokenVerifier {
        TokenVerifier {
            realm: realm.to_owned(),
            service: service.to_owned(),
            issuer: issuer.to_owned(),
            roots: Vec::new(),
            own: Some(PublicKey::P256(DecodingKey::from_ec_der(point))),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The key a token with `x5c` header `chain` may be signed by: its leaf's, when the chain
    /// leads to the bundle (or the leaf is a bundle certificate).
    fn chain_key(&self, chain: &[String]) -> Result<PublicKey, String> {
        if chain.len() > MAX_CHAIN {
            return Err(format!("x5c: more than {MAX_CHAIN} certificates"));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let certs = chain
            .iter()
            .map(|c| {
                let der = b64.decode(c).map_err(|_| "x5c: bad base64".to_owned())?;
                let cert = Certificate::from_der(&der).map_err(|e| format!("x5c: {e}"))?;
                Ok((CertificateDer::from(der), cert))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let Some(((leaf_der, leaf), above)) = certs.split_first() else {
            return Err("x5c: empty chain".into());
        };
        // A bundle certificate itself: trusted as when the token names no chain.
        if let Some(root) = self.roots.iter().find(|r| r.der == leaf_der.as_ref()) {
            if !valid_now(leaf) {
                return Err("x5c: a certificate of the chain is expired or not yet valid".into());
            }
            return Ok(root.key.clone());
        }
        if !key_usage_allows(leaf, |ku| ku.digital_signature()) {
            return Err("x5c: the leaf's key usage does not allow digital signatures".into());
        }
        if !above
            .iter()
            .all(|(_, c)| key_usage_allows(c, |ku| ku.key_cert_sign()))
        {
            return Err(
                "x5c: a CA of the chain's key usage does not allow signing certificates".into(),
            );
        }
        let ee = webpki::EndEntityCert::try_from(leaf_der).map_err(|e| chain_error(&e))?;
        let anchors: Vec<_> = self.roots.iter().map(|r| r.anchor.clone()).collect();
        let intermediates: Vec<CertificateDer<'_>> = above.iter().map(|(d, _)| d.clone()).collect();
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            rustls::pki_types::UnixTime::now(),
            AnyExtendedKeyUsage,
            None,
            None,
        )
        .map_err(|e| chain_error(&e))?;
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
            None => self
                .roots
                .iter()
                .map(|r| r.key.clone())
                .chain(self.own.clone())
                .collect(),
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
        Err(if self.own.is_some() {
            "signature not made by this registry's token key".into()
        } else {
            "signature not made by a key of auth.token.rootcertbundle".into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
