//! `auth.builtin`'s token signing key: an ECDSA P-256 key generated once and kept under the
//! data root as PKCS#8 PEM (`token-signing-key.pem`, mode 0600, written atomically), so that
//! tokens survive a restart. `openssl ec -in token-signing-key.pem -pubout` prints its public
//! half for a token verifier elsewhere.

use base64::Engine as _;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};
use std::path::Path;

/// The key's file name under the data root.
pub const FILE: &str = "token-signing-key.pem";

pub struct SigningKey {
    /// PKCS#8 DER of the private key.
    pub pkcs8: Vec<u8>,
    /// The public key, uncompressed SEC1.
    pub public: Vec<u8>,
}

impl SigningKey {
    /// Reads the key at `path`, or generates one and writes it there.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, String> {
        let err = |e: &dyn std::fmt::Display| format!("token signing key {}: {e}", path.display());
        let rng = ring::rand::SystemRandom::new();
        let (pem, _) = crate::keyfile::read_or_create(
            path,
            |_| true,
            || {
                let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| std::io::Error::other("cannot generate a P-256 key"))?;
                Ok(pem(der.as_ref()).into_bytes())
            },
        )
        .map_err(|e| err(&e))?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| {
            err(&format!(
                "not a PKCS#8 PEM key ({e:?}); move it away to get a new one"
            ))
        })?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| {
            err(&format!(
                "not a P-256 key ({e}); move it away to get a new one"
            ))
        })?;
        Ok(SigningKey {
            public: pair.public_key().as_ref().to_vec(),
            pkcs8: der.secret_pkcs8_der().to_vec(),
        })
    }

    /// The `kid` of tokens signed with this key: a hash of its public half.
    pub fn kid(&self) -> String {
        hex::encode(&Sha256::digest(&self.public)[..16])
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        let a = SigningKey::load_or_create(&p).unwrap();
        let b = SigningKey::load_or_create(&p).unwrap();
        assert_eq!(a.public, b.public);
        assert_eq!(a.public.len(), 65);
        std::fs::write(&p, "garbage").unwrap();
        let Err(e) = SigningKey::load_or_create(&p) else {
            panic!("garbage accepted as a key");
        };
        assert!(e.contains("move it away"), "{e}");
    }
}
