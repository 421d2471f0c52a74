//! The TLS side of `loadgen load` for `https://` URLs: a rustls client that trusts only the
//! certificate(s) in `--cacert` (the bench's self-signed one) and offers `h2` or `http/1.1`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub struct Client {
    connector: TlsConnector,
}

impl Client {
    /// Trusts the PEM certificates in `cacert`; ALPN `h2` when `h2`, else `http/1.1`.
    pub fn new(cacert: &str, h2: bool) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cacert).map_err(|e| format!("{cacert}: {e}"))? {
            let c = c.map_err(|e| format!("{cacert}: {e}"))?;
            roots.add(c).map_err(|e| format!("{cacert}: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        Ok(Client {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The handshake with `host` over `stream`; fails unless the server agreed to the protocol.
    pub async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
        let s = self.connector.connect(name, stream).await?;
        let offered = self.connector.config().alpn_protocols[0].as_slice();
        if s.get_ref().1.alpn_protocol() != Some(offered) {
            return Err(std::io::Error::other(format!(
                "the server did not agree to {}",
                String::from_utf8_lossy(offered)
            )));
        }
        Ok(s)
    }
}
