//! The connector upstream connections are made with: TCP with a connect timeout, then TLS
//! (rustls, ring) for https with the system's root certificates (the bundle named by
//! `SSL_CERT_FILE`, else the usual distribution paths) plus an optional PEM CA file,
//! ALPN offering h2 and http/1.1. Plain http passes through. A machine without CA
//! certificates still gets a working connector (http works; https fails to verify).

use super::error::UpstreamError;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where Linux distributions and others keep their CA bundle, tried in order when
/// `SSL_CERT_FILE` is not set.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

/// The connector for one upstream. `connect_timeout` bounds the TCP connect only.
pub fn connector(
    connect_timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<HttpsConnector<HttpConnector>, UpstreamError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let config = client_config(root_store(ca_file)?)?;
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http))
}

fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, UpstreamError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// System roots plus the certificates of `ca_file` (which must hold at least one).
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, UpstreamError> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(system_certs());
    tracing::debug!(added, ignored, "loaded system root certificates");
    if let Some(path) = ca_file {
        let certs = read_pem(path)
            .map_err(|e| UpstreamError::Invalid(format!("CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(UpstreamError::Invalid(format!(
                "CA file {} holds no certificate",
                path.display()
            )));
        }
        let (added, ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(UpstreamError::Invalid(format!(
                "CA file {}: no usable certificate ({ignored} rejected)",
                path.display()
            )));
        }
    }
    if roots.is_empty() {
        tracing::warn!("no root CA certificates found: https upstreams will fail to verify");
    }
    Ok(roots)
}

/// The certificates of the system bundle (`SSL_CERT_FILE`, else the first bundle found).
fn system_certs() -> Vec<CertificateDer<'static>> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from));
    for path in candidates {
        match read_pem(&path) {
            Ok(certs) if !certs.is_empty() => return certs,
            _ => {}
        }
    }
    Vec::new()
}

/// The certificates of a PEM file; other sections are skipped.
fn read_pem(path: &Path) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ca_file_errors() {
        assert!(root_store(Some(Path::new("/nonexistent/ca.pem"))).is_err());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "not a certificate").unwrap();
        assert!(root_store(Some(f.path())).is_err());
    }

    #[test]
    fn connector_builds_without_ca_file() {
        assert!(connector(Duration::from_secs(1), None).is_ok());
    }

    #[test]
    fn empty_roots_still_build() {
        assert!(client_config(RootCertStore::empty()).is_ok());
    }
}
