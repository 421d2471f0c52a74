//! HTTPS on the main listener: trust, expiry, client certificates, ALPN, minimum version, and
//! certificate reload (on a file change and on SIGHUP). Certificates are made here with rcgen.
//!
//! The client is tokio-rustls + hyper's client connection rather than reqwest: reqwest 0.13's
//! `rustls` feature brings the aws-lc-rs provider (a C build) and `rustls-no-provider` makes every
//! other test's `reqwest::Client` panic without a process-wide provider; this way also lets a
//! test see the certificate the server presented and the negotiated ALPN protocol.

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A certificate authority made for one test.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
struct Pair {
    cert: String,
    key: String,
}

impl Pair {
    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert.as_bytes())
            .unwrap()
            .to_vec()
    }
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn issue(&self, cn: &str, serial: u64, client: bool, expired: bool) -> Pair {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        } else {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        Pair {
            cert: params.signed_by(&key, &issuer).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self, cn: &str, serial: u64) -> Pair {
        self.issue(cn, serial, false, false)
    }
}

/// PEM padded with blank lines to a fixed length, so a replacement has the same size.
fn padded(pem: &str, len: usize) -> String {
    assert!(
        pem.len() <= len,
        "PEM longer than its padding: {}",
        pem.len()
    );
    format!("{pem}{}", "\n".repeat(len - pem.len()))
}

const CERT_LEN: usize = 4096;
const KEY_LEN: usize = 1024;

/// Writes `pair` over the server's certificate and key files.
fn write_pair(dir: &Path, pair: &Pair) {
    std::fs::write(dir.join("server.crt"), padded(&pair.cert, CERT_LEN)).unwrap();
    std::fs::write(dir.join("server.key"), padded(&pair.key, KEY_LEN)).unwrap();
}

/// Files for a TLS server: its pair, and client CAs.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(pair: &Pair, client_cas: &[&Ca]) -> Files {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), pair);
        for (i, ca) in client_cas.iter().enumerate() {
            std::fs::write(dir.path().join(format!("client-ca-{i}.pem")), &ca.pem).unwrap();
        }
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn yaml(&self, client_cas: usize, extra_tls: &str) -> String {
        let mut y = format!(
            "http:\n  tls:\n    certificate: {}\n    key: {}\n",
            self.path("server.crt").display(),
            self.path("server.key").display()
        );
        if client_cas > 0 {
            y.push_str("    clientcas:\n");
            for i in 0..client_cas {
                y.push_str(&format!(
                    "      - {}\n",
                    self.path(&format!("client-ca-{i}.pem")).display()
                ));
            }
        }
        y.push_str(extra_tls);
        y
    }
}

fn tls_server(yaml: String) -> Server {
    Server::start_with(Options {
        extra_yaml: yaml,
        ..Options::default()
    })
}

/// How a client connects.
struct Client<'a> {
    trust: &'a Ca,
    identity: Option<&'a Pair>,
    alpn: &'a [&'a [u8]],
    tls12_only: bool,
}

impl<'a> Client<'a> {
    fn trusting(ca: &'a Ca) -> Client<'a> {
        Client {
            trust: ca,
            identity: None,
            alpn: &[b"h2", b"http/1.1"],
            tls12_only: false,
        }
    }
}

/// What one `GET /v2/` over TLS gave.
#[derive(Debug)]
struct Outcome {
    status: u16,
    version: http::Version,
    alpn: Option<Vec<u8>>,
    /// The end-entity certificate the server presented.
    cert: Vec<u8>,
}

/// Connects to `addr` with `c`, sends `GET /v2/` and reads the whole answer. Any failure, from
/// the handshake to the body, is an `Err`.
async fn get(addr: &str, c: &Client<'_>) -> Result<Outcome, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(c.trust.pem.as_bytes()).unwrap())
        .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if c.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match c.identity {
        None => builder.with_no_client_auth(),
        Some(p) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(p.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = c.alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let req = http::Request::get(format!("https://{addr}/v2/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let io = TokioIo::new(tls);
        let resp = if alpn.as_deref() == Some(b"h2") {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        }
        .map_err(|e| format!("request: {e:?}"))?;
        let status = resp.status().as_u16();
        let version = resp.version();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok(Outcome {
            status,
            version,
            alpn,
            cert,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out".to_owned())?
}

#[tokio::test]
async fn trusted_ca_gets_h2_and_http1() {
    let ca = Ca::new("test ca");
    let pair = ca.server("stevedore", 1);
    let files = Files::new(&pair, &[]);
    let s = tls_server(files.yaml(0, ""));
    let o = get(&s.addr, &Client::trusting(&ca)).await.unwrap();
    assert_eq!(o.status, 200);
    assert_eq!(o.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(o.version, http::Version::HTTP_2);
    assert_eq!(o.cert, pair.der());
    let h1 = Client {
        alpn: &[b"http/1.1"],
        ..Client::trusting(&ca)
    };
    let o = get(&s.addr, &h1).await.unwrap();
    assert_eq!((o.status, o.version), (200, http::Version::HTTP_11));
    // No ALPN at all: HTTP/1.1.
    let none = Client {
        alpn: &[],
        ..Client::trusting(&ca)
    };
    let o = get(&s.addr, &none).await.unwrap();
    assert_eq!((o.status, o.version), (200, http::Version::HTTP_11));
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = client().get(s.url("/v2/")).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // The server is still fine after that.
    assert_eq!(get(&s.addr, &h1).await.unwrap().status, 200);
}

#[tokio::test]
async fn wrong_ca_and_expired_certificate_are_refused() {
    let ca = Ca::new("test ca");
    let other = Ca::new("other ca");
    let files = Files::new(&ca.server("stevedore", 1), &[]);
    let s = tls_server(files.yaml(0, ""));
    let e = get(&s.addr, &Client::trusting(&other)).await.unwrap_err();
    assert!(e.contains("handshake"), "{e}");
    assert!(e.to_lowercase().contains("unknownissuer"), "{e}");

    let expired = Files::new(&ca.issue("stevedore", 2, false, true), &[]);
    let s2 = tls_server(expired.yaml(0, ""));
    let e = get(&s2.addr, &Client::trusting(&ca)).await.unwrap_err();
    assert!(e.to_lowercase().contains("expired"), "{e}");
    // The first server is unaffected.
    assert_eq!(
        get(&s.addr, &Client::trusting(&ca)).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() {
    let ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let rogue_ca = Ca::new("rogue ca");
    let files = Files::new(&ca.server("stevedore", 1), &[&client_ca]);
    let s = tls_server(files.yaml(1, ""));

    // Under TLS 1.3 the client learns of the refusal after its side of the handshake, as an
    // alert or a closed connection: the server's log says why.
    let handshake_failures = || s.log_text().matches("TLS handshake failed").count();
    get(&s.addr, &Client::trusting(&ca)).await.unwrap_err();
    assert!(
        eventually(Duration::from_secs(5), || handshake_failures() >= 1).await,
        "{}",
        s.log_text()
    );

    let good = client_ca.issue("alice", 10, true, false);
    let c = Client {
        identity: Some(&good),
        ..Client::trusting(&ca)
    };
    let o = get(&s.addr, &c).await.unwrap();
    assert_eq!((o.status, o.version), (200, http::Version::HTTP_2));

    let rogue = rogue_ca.issue("mallory", 11, true, false);
    let c = Client {
        identity: Some(&rogue),
        ..Client::trusting(&ca)
    };
    get(&s.addr, &c).await.unwrap_err();
    assert!(
        eventually(Duration::from_secs(5), || handshake_failures() >= 2).await,
        "{}",
        s.log_text()
    );

    let expired = client_ca.issue("bob", 12, true, true);
    let c = Client {
        identity: Some(&expired),
        ..Client::trusting(&ca)
    };
    get(&s.addr, &c).await.unwrap_err();
    assert!(
        eventually(Duration::from_secs(5), || handshake_failures() >= 3).await,
        "{}",
        s.log_text()
    );
    assert_eq!(
        get(
            &s.addr,
            &Client {
                identity: Some(&good),
                ..Client::trusting(&ca)
            }
        )
        .await
        .unwrap()
        .status,
        200
    );
}

#[tokio::test]
async fn http2_disabled_and_minimum_version() {
    let ca = Ca::new("test ca");
    let files = Files::new(&ca.server("stevedore", 1), &[]);
    let s = tls_server(format!(
        "{}  http2:\n    disabled: true\n",
        files.yaml(0, "    minimumtls: tls1.3\n")
    ));
    let o = get(&s.addr, &Client::trusting(&ca)).await.unwrap();
    assert_eq!(o.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!((o.status, o.version), (200, http::Version::HTTP_11));
    let old = Client {
        tls12_only: true,
        ..Client::trusting(&ca)
    };
    let e = get(&s.addr, &old).await.unwrap_err();
    assert!(e.contains("handshake"), "{e}");
}

/// Polls until the server presents `want`, up to `within`.
async fn served_within(addr: &str, ca: &Ca, want: &[u8], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(o) = get(addr, &Client::trusting(ca)).await
            && o.cert == want
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn renewed_certificate_is_picked_up_without_restart() {
    let ca = Ca::new("test ca");
    let first = ca.server("first", 1);
    let files = Files::new(&first, &[]);
    let s = tls_server(files.yaml(0, ""));
    let o = get(&s.addr, &Client::trusting(&ca)).await.unwrap();
    assert_eq!(o.cert, first.der());

    // Renewed in place (certificate first, then key, as a careless script would).
    let second = ca.server("second", 2);
    write_pair(files.dir.path(), &second);
    assert!(
        served_within(&s.addr, &ca, &second.der(), Duration::from_secs(15)).await,
        "the renewed certificate was not served; log:\n{}",
        s.log_text()
    );
    assert!(s.logged("TLS certificate reloaded").await);

    // A broken renewal keeps the certificate that works (the files are looked at during
    // handshakes, so keep connecting).
    let errors = || s.log_text().matches("TLS certificate not reloaded").count();
    let before = errors();
    std::fs::write(files.path("server.crt"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while errors() == before && Instant::now() < deadline {
        let o = get(&s.addr, &Client::trusting(&ca)).await.unwrap();
        assert_eq!(
            o.cert,
            second.der(),
            "a bad certificate replaced the good one"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        errors() > before,
        "no error logged for a bad certificate; log:\n{}",
        s.log_text()
    );
    let o = get(&s.addr, &Client::trusting(&ca)).await.unwrap();
    assert_eq!(o.cert, second.der());
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let ca = Ca::new("test ca");
    let first = ca.server("first", 1);
    let files = Files::new(&first, &[]);
    let s = tls_server(files.yaml(0, ""));
    assert_eq!(
        get(&s.addr, &Client::trusting(&ca)).await.unwrap().cert,
        first.der()
    );
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &s.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP failed");
    };
    // Replace the files with a pair of the same sizes and put the old modification times
    // back, so only the signal can make the server notice.
    let mtime = |name: &str| {
        std::fs::metadata(files.path(name))
            .unwrap()
            .modified()
            .unwrap()
    };
    let (crt_time, key_time) = (mtime("server.crt"), mtime("server.key"));
    let restore = |name: &str, t| {
        std::fs::File::options()
            .write(true)
            .open(files.path(name))
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    let bad = Pair {
        cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        key: first.key.clone(),
    };
    write_pair(files.dir.path(), &bad);
    restore("server.crt", crt_time);
    restore("server.key", key_time);
    hup();
    assert!(
        eventually(Duration::from_secs(10), || s
            .log_text()
            .contains("TLS certificate not reloaded"))
        .await,
        "no error logged for a bad certificate; log:\n{}",
        s.log_text()
    );
    assert_eq!(
        get(&s.addr, &Client::trusting(&ca)).await.unwrap().cert,
        first.der(),
        "a bad certificate replaced the good one"
    );

    let second = ca.server("second", 2);
    write_pair(files.dir.path(), &second);
    restore("server.crt", crt_time);
    restore("server.key", key_time);
    // Without the signal, nothing changes (the files look as they did). Proving an absence
    // takes time: this outlasts one 2 s file check of the watcher (src/http/tls.rs CHECK_EVERY).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&s.addr, &Client::trusting(&ca)).await.unwrap().cert,
        first.der()
    );
    hup();
    assert!(
        served_within(&s.addr, &ca, &second.der(), Duration::from_secs(10)).await,
        "SIGHUP did not reload; log:\n{}",
        s.log_text()
    );
}

/// Runs `stevedore serve` on a config that must not start; returns its stderr.
fn failed_start(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n{yaml}",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .arg("serve")
        .arg(&config)
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "stevedore started on: {yaml}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stevedore kept running on: {yaml}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

#[test]
fn unusable_certificate_or_key_stops_startup() {
    let ca = Ca::new("test ca");
    let pair = ca.server("stevedore", 1);
    let other = ca.server("other", 2);
    let files = Files::new(&pair, &[]);
    let yaml = |crt: &Path, key: &Path| {
        format!(
            "http:\n  tls:\n    certificate: {}\n    key: {}\n",
            crt.display(),
            key.display()
        )
    };

    std::fs::write(files.path("other.key"), &other.key).unwrap();
    let err = failed_start(&yaml(&files.path("server.crt"), &files.path("other.key")));
    assert!(
        err.contains("http.tls.key") && err.contains("does not match"),
        "{err}"
    );

    let err = failed_start(&yaml(&files.path("missing.crt"), &files.path("server.key")));
    assert!(
        err.contains("http.tls.certificate") && err.contains("missing.crt"),
        "{err}"
    );

    std::fs::write(files.path("empty.key"), "").unwrap();
    let err = failed_start(&yaml(&files.path("server.crt"), &files.path("empty.key")));
    assert!(
        err.contains("http.tls.key") && err.contains("no PEM private key"),
        "{err}"
    );

    std::fs::write(files.path("junk.pem"), "junk").unwrap();
    let err = failed_start(&format!(
        "{}    clientcas: [{}]\n",
        yaml(&files.path("server.crt"), &files.path("server.key")),
        files.path("junk.pem").display()
    ));
    assert!(err.contains("http.tls.clientcas"), "{err}");
}

#[tokio::test]
async fn silent_clients_after_the_handshake_are_cut_off() {
    let ca = Ca::new("test ca");
    let files = Files::new(&ca.server("stevedore", 1), &[]);
    let s = tls_server(format!(
        "{}  limits:\n    headertimeout: 1s\n",
        files.yaml(0, "")
    ));
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        let started = Instant::now();
        let mut tls = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut buf),
        )
        .await;
        assert!(
            read.is_ok() && started.elapsed() < Duration::from_secs(5),
            "{}: a silent client kept its connection for {:?}",
            String::from_utf8_lossy(alpn),
            started.elapsed()
        );
    }
}

/// The mirror reaches an HTTPS upstream that its `proxy.cafile` trusts (here another
/// stevedore with TLS), and refuses one it does not trust.
#[tokio::test]
async fn mirror_fetches_from_an_https_upstream_trusting_its_cafile() {
    let ca = Ca::new("upstream ca");
    let files = Files::new(&ca.server("upstream", 1), &[]);
    let upstream = tls_server(files.yaml(0, ""));
    let cafile = files.path("ca.pem");
    std::fs::write(&cafile, &ca.pem).unwrap();
    let blob = random_bytes(70_000, 5);
    let d = digest(&blob);
    let pushed = push_over_tls(&upstream.addr, &ca, "library/secure", &blob).await;
    assert_eq!(pushed, 201);
    let remote = format!("https://{}", upstream.addr);
    let trusted = Server::mirror(&remote, &format!("  cafile: {}\n", cafile.display()));
    let r = send(client().get(trusted.url(&format!("/v2/library/secure/blobs/{d}")))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest(&r.bytes().await.unwrap()), d);
    // Without the CA the upstream's certificate is not trusted: unavailable, nothing cached.
    let untrusting = Server::mirror(&remote, "");
    let r = send(client().get(untrusting.url(&format!("/v2/library/secure/blobs/{d}")))).await;
    assert_eq!(r.status(), 503);
}

/// A monolithic blob push over TLS trusting `ca`; returns the status.
async fn push_over_tls(addr: &str, ca: &Ca, repo: &str, data: &[u8]) -> u16 {
    use http_body_util::{BodyExt, Full};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("/v2/{repo}/blobs/uploads/?digest={}", digest(data)))
        .header("host", addr)
        .body(Full::new(bytes::Bytes::copy_from_slice(data)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}
