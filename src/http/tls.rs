//! HTTPS on the main listener: the rustls server configuration built from `http.tls` (minimum
//! version, ALPN, client certificates) and a certificate resolver that picks up a certificate
//! renewed on disk without a restart. It reads the certificate, key and client CA files (never
//! during a handshake: that looks at them on the blocking pool); it does not accept connections (that is `serve`'s job) and installs no signal handler (`main` calls
//! [`ServerTls::reload`] on SIGHUP).

use crate::config::{HttpConfig, TlsConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often, at most, a handshake looks at the files' modification times.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why the TLS configuration could not be loaded. Each message names the configuration key and
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls.certificate {}: {reason}", .path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("http.tls.key {}: {reason}", .path.display())]
    Key { path: PathBuf, reason: String },
    #[error(
        "http.tls.key {} does not match the public key of http.tls.certificate {}",
        .key.display(), .certificate.display()
    )]
    Mismatch { certificate: PathBuf, key: PathBuf },
    #[error("http.tls.clientcas {}: {reason}", .path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("http.tls: {0}")]
    Setup(String),
}

/// The server side of TLS: what `serve` hands each accepted connection to.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    resolver: Arc<ReloadingCert>,
}

impl ServerTls {
    /// Loads `http.tls` (certificate, key, client CAs) and builds the server configuration:
    /// TLS 1.2 and 1.3 (or 1.3 only), ALPN `h2` (unless `http.http2.disabled`) and `http/1.1`,
    /// and, with client CAs, a required and verified client certificate.
    pub fn load(http: &HttpConfig, tls: &TlsConfig) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = Arc::new(ReloadingCert::load(
            &tls.certificate,
            &tls.key,
            provider.clone(),
        )?);
        let versions: &[&rustls::SupportedProtocolVersion] = match tls.minimumtls.as_deref() {
            Some("tls1.3") => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = if tls.clientcas.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            for path in &tls.clientcas {
                let ca_err = |reason: String| TlsError::ClientCa {
                    path: path.clone(),
                    reason,
                };
                let certs = read_certs(path).map_err(ca_err)?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| ca_err(format!("not a usable CA certificate: {e}")))?;
                }
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Setup(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = if http.http2.disabled {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        Ok(ServerTls {
            config: Arc::new(config),
            resolver,
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Reads the certificate and key again now (SIGHUP). A bad pair keeps the current one.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.resolver.reload()
    }
}

/// What identifies a version of a file cheaply: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Serves the certificate read from `certificate` and `key`, reading them again when their
/// modification time or size changes (looked at, at most every [`CHECK_EVERY`], on the blocking
/// pool when a handshake finds a look due: the handshake itself does no file I/O) or when asked
/// ([`ReloadingCert::reload`]). A pair that cannot be read or does not match is logged and the
/// previous one kept.
#[derive(Debug)]
pub struct ReloadingCert {
    files: Arc<CertFiles>,
    /// When the files were last looked at.
    looked: Mutex<Instant>,
}

/// The files, what they were when last looked at, and the pair read from them.
#[derive(Debug)]
struct CertFiles {
    certificate: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<(Stamp, Stamp)>,
}

impl ReloadingCert {
    pub fn load(
        certificate: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, TlsError> {
        let stamps = (stamp(certificate), stamp(key));
        let current = load_pair(certificate, key, &provider)?;
        Ok(ReloadingCert {
            files: Arc::new(CertFiles {
                certificate: certificate.to_owned(),
                key: key.to_owned(),
                provider,
                current: RwLock::new(Arc::new(current)),
                seen: Mutex::new(stamps),
            }),
            looked: Mutex::new(Instant::now()),
        })
    }

    /// Reads the pair again and swaps it in if it is good (blocking file I/O).
    pub fn reload(&self) -> Result<(), TlsError> {
        let f = &self.files;
        *f.seen.lock().expect("tls stamps poisoned") = (stamp(&f.certificate), stamp(&f.key));
        *self.looked.lock().expect("tls stamps poisoned") = Instant::now();
        f.swap()
    }

    /// When a look at the files is due (every [`CHECK_EVERY`]), has one made on the blocking
    /// pool; it reloads the pair if the files changed.
    fn check(&self) {
        {
            let Ok(mut looked) = self.looked.try_lock() else {
                return; // another handshake is looking
            };
            if looked.elapsed() < CHECK_EVERY {
                return;
            }
            *looked = Instant::now();
        }
        let files = self.files.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || files.check());
            }
            Err(_) => files.check(),
        }
    }
}

impl CertFiles {
    fn swap(&self) -> Result<(), TlsError> {
        match load_pair(&self.certificate, &self.key, &self.provider) {
            Ok(k) => {
                *self.current.write().expect("tls certificate poisoned") = Arc::new(k);
                tracing::info!(
                    certificate = %self.certificate.display(),
                    "TLS certificate reloaded"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; keeping the previous one");
                Err(e)
            }
        }
    }

    /// Reloads when the files changed since they were last looked at (blocking).
    fn check(&self) {
        let changed = {
            let mut seen = self.seen.lock().expect("tls stamps poisoned");
            let now = (stamp(&self.certificate), stamp(&self.key));
            let changed = now != *seen;
            // A bad new pair is reported once, not at every check.
            *seen = now;
            changed
        };
        if changed {
            let _ = self.swap();
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.check();
        Some(
            self.files
                .current
                .read()
                .expect("tls certificate poisoned")
                .clone(),
        )
    }
}

/// The certificates of a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file".to_owned()
        }
        e => format!("not valid PEM: {e}"),
    })
}

/// Reads a certificate chain and its private key, and checks that they belong together.
fn load_pair(
    certificate: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(certificate).map_err(|reason| TlsError::Certificate {
        path: certificate.to_owned(),
        reason,
    })?;
    let key_der = read_key(key).map_err(|reason| TlsError::Key {
        path: key.to_owned(),
        reason,
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::Key {
            path: key.to_owned(),
            reason: format!("unusable private key: {e}"),
        })?;
    let ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                certificate: certificate.to_owned(),
                key: key.to_owned(),
            })
        }
        Err(e) => Err(TlsError::Certificate {
            path: certificate.to_owned(),
            reason: e.to_string(),
        }),
    }
}
