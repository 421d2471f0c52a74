//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{ts}.{body}">`,
//! one signature per secret (two while a secret is being rotated), space-separated.
//!
//! Owns reading the secret files (the `whsec_` + base64 convention) and computing signatures.
//! Keys never leave this module, and nothing here logs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Signs requests with one or more secrets.
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys, <redacted>)", self.keys.len())
    }
}

impl Signer {
    /// A signer with the secrets in `files` (each: optional `whsec_`, then base64; trailing
    /// newlines ignored). The error names the file, never its content.
    pub fn from_files(files: &[impl AsRef<Path>]) -> Result<Signer, String> {
        let keys = files
            .iter()
            .map(|f| {
                let f = f.as_ref();
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("signing secret {}: {e}", f.display()))?;
                decode_secret(&text).map_err(|why| format!("signing secret {}: {why}", f.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signer { keys })
    }

    /// A signer with these secrets (`whsec_…` text).
    pub fn from_secrets(secrets: &[&str]) -> Result<Signer, String> {
        let keys = secrets
            .iter()
            .map(|s| decode_secret(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signer { keys })
    }

    /// The `webhook-signature` value for message `id`, sent at `timestamp` (Unix seconds).
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut out = String::new();
        for key in &self.keys {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
        }
        out
    }
}

/// A secret's key bytes: the base64 after an optional `whsec_` prefix.
fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let b64 = t.strip_prefix("whsec_").unwrap_or(t);
    let key = STANDARD
        .decode(b64)
        .map_err(|_| "expected \"whsec_\" followed by base64 (the Standard Webhooks form)")?;
    if key.len() < 16 {
        return Err("the key is shorter than 16 bytes".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks libraries' test suites.
        let s = Signer::from_secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).expect("secret");
        let sig = s.signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let s = Signer::from_secrets(&[
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_c2Vjb25kIHNlY3JldCBvZiBzb21lIGxlbmd0aA==",
        ])
        .expect("secrets");
        let sig = s.signature("id", 1, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn bad_secrets_are_refused_without_echo() {
        let e = Signer::from_secrets(&["whsec_not base64!"]).expect_err("bad");
        assert!(!e.contains("not base64"), "{e}");
        assert!(Signer::from_secrets(&["whsec_c2hvcnQ="]).is_err());
        assert!(
            format!(
                "{:?}",
                Signer::from_secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).expect("s")
            )
            .contains("redacted")
        );
    }
}
