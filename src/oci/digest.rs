//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`), validated once at the edge and
//! carried as `Digest`; the streaming hasher of either algorithm.

use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;

/// A digest algorithm we can compute and store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha512,
}

impl Algorithm {
    /// Every supported algorithm (each has its own directory under `blobs/`).
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    /// The name used in digests and in `?digest-algorithm=`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// How many hex characters the encoded part has.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A supported algorithm by name; any other well-formed name is `UnsupportedAlgorithm`.
    pub fn parse(name: &str) -> Result<Algorithm, DigestError> {
        match name {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ if is_algorithm_name(name) => Err(DigestError::UnsupportedAlgorithm(clip(name))),
            _ => Err(DigestError::Malformed(clip(name))),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated `<algorithm>:<lowercase hex>` digest of a supported algorithm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form algorithm:hex")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (only sha256 and sha512)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} does not have the lowercase hex characters its algorithm needs")]
    BadHex(String),
}

/// The spec's `algorithm-component` (without separators, which no registered name uses).
fn is_algorithm_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(clip(s)))?;
        if !is_algorithm_name(algo) || hex.is_empty() {
            return Err(DigestError::Malformed(clip(s)));
        }
        let algorithm = Algorithm::parse(algo)?;
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadHex(clip(s)));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::of_with(Algorithm::Sha256, data)
    }

    /// The digest of `data` in `algorithm`.
    pub fn of_with(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = DigestHasher::new(algorithm);
        h.update(data);
        h.finish()
    }

    fn from_sum(algorithm: Algorithm, sum: &[u8]) -> Digest {
        Digest(format!("{}:{}", algorithm.name(), hex::encode(sum)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part, without `<algorithm>:`.
    pub fn hex(&self) -> &str {
        &self.0[self.algorithm().name().len() + 1..]
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental sha256 over streamed bytes.
#[derive(Clone, Default)]
pub struct Sha256Hasher(Sha256);

impl fmt::Debug for Sha256Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256Hasher")
    }
}

impl Sha256Hasher {
    pub fn new() -> Sha256Hasher {
        Sha256Hasher(Sha256::new())
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Digest {
        Digest::from_sum(Algorithm::Sha256, &self.0.finalize())
    }
}

/// Incremental hash of streamed bytes in any supported algorithm.
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Default for DigestHasher {
    fn default() -> Self {
        DigestHasher::new(Algorithm::Sha256)
    }
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigestHasher({})", self.algorithm())
    }
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> DigestHasher {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            DigestHasher::Sha256(_) => Algorithm::Sha256,
            DigestHasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(data),
            DigestHasher::Sha512(h) => h.update(data),
        }
    }

    /// The running state, to be carried to another process (an upload session continued on
    /// another replica). Restored by [`DigestHasher::restore`].
    pub fn save(&self) -> Vec<u8> {
        use sha2::digest::common::hazmat::SerializableState;
        match self {
            DigestHasher::Sha256(h) => h.serialize().to_vec(),
            DigestHasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// A hasher continued from a [`DigestHasher::save`]d state; `None` when `state` is not one
    /// of `algorithm`.
    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Option<DigestHasher> {
        use sha2::digest::common::hazmat::SerializableState;
        Some(match algorithm {
            Algorithm::Sha256 => {
                DigestHasher::Sha256(Sha256::deserialize(state.try_into().ok()?).ok()?)
            }
            Algorithm::Sha512 => {
                DigestHasher::Sha512(Sha512::deserialize(state.try_into().ok()?).ok()?)
            }
        })
    }

    pub fn finish(self) -> Digest {
        match self {
            DigestHasher::Sha256(h) => Digest::from_sum(Algorithm::Sha256, &h.finalize()),
            DigestHasher::Sha512(h) => Digest::from_sum(Algorithm::Sha512, &h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_hash_continues_where_it_stopped() {
        for algorithm in Algorithm::ALL {
            let mut h = DigestHasher::new(algorithm);
            h.update(&[7u8; 1000]);
            let state = h.save();
            let mut continued = DigestHasher::restore(algorithm, &state).unwrap();
            continued.update(b"tail");
            let mut whole = vec![7u8; 1000];
            whole.extend_from_slice(b"tail");
            assert_eq!(continued.finish(), Digest::of_with(algorithm, &whole));
            assert!(DigestHasher::restore(algorithm, &state[1..]).is_none());
        }
        let sha256 = DigestHasher::new(Algorithm::Sha256).save();
        assert!(DigestHasher::restore(Algorithm::Sha512, &sha256).is_none());
    }

    #[test]
    fn parses_and_hashes() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        let mut h = Sha256Hasher::new();
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finish(), d);
    }

    #[test]
    fn sha512_parses_and_hashes() {
        let d = Digest::of_with(Algorithm::Sha512, b"hello");
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.hex().len(), 128);
        assert!(d.as_str().starts_with("sha512:9b71d224bd62f378"));
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        let mut h = DigestHasher::new(Algorithm::Sha512);
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finish(), d);
        assert_eq!(Digest::of(b"hello").algorithm(), Algorithm::Sha256);
        assert_eq!(Algorithm::parse("sha512"), Ok(Algorithm::Sha512));
        assert!(matches!(
            Algorithm::parse("blake3"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Algorithm::parse("SHA512"),
            Err(DigestError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            Digest::parse("sha256"),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            Digest::parse(":abc"),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            Digest::parse("sha384:abcd"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse("sha512:abcd"),
            Err(DigestError::BadHex(_))
        ));
        let short = format!("sha512:{}", "a".repeat(64));
        assert!(matches!(Digest::parse(&short), Err(DigestError::BadHex(_))));
        assert!(matches!(
            Digest::parse("sha256:abcd"),
            Err(DigestError::BadHex(_))
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(matches!(Digest::parse(&upper), Err(DigestError::BadHex(_))));
        let path = format!("sha256:../{}", "a".repeat(61));
        assert!(Digest::parse(&path).is_err());
    }
}
