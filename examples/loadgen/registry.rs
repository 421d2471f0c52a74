//! The registry protocol the bench needs, over hyper's pooled client: test images made and
//! pushed, a probe of the monolithic push form, one timed blob push (monolithic or chunked),
//! and a timed pull (manifest, then every blob at once). Bodies stream from files in 1 MiB
//! reads; nothing holds a whole blob in memory.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};
use std::io::{Read, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;
type Http = Client<HttpConnector, Body>;

/// What `pull` asks for (the bench's images are Docker schema 2).
pub const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const READ: usize = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client() -> Http {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(c)
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// A file's content with its first bytes replaced by `salt`, so that one file gives distinct
/// blobs (the bench pushes a new blob each repetition, so that no push finds it stored).
#[derive(Clone)]
struct Source {
    path: PathBuf,
    salt: Arc<[u8]>,
    len: u64,
}

impl Source {
    fn open(path: &str, salt: &str) -> Result<Source, String> {
        let len = std::fs::metadata(path)
            .map_err(|e| format!("{path}: {e}"))?
            .len();
        if salt.len() as u64 > len {
            return Err(format!("{path}: shorter than the salt"));
        }
        Ok(Source {
            path: path.into(),
            salt: salt.as_bytes().into(),
            len,
        })
    }

    fn patch(&self, at: u64, buf: &mut [u8]) {
        let salt = &self.salt[..];
        if (at as usize) < salt.len() {
            let from = at as usize;
            let n = (salt.len() - from).min(buf.len());
            buf[..n].copy_from_slice(&salt[from..from + n]);
        }
    }

    /// sha256 of the (salted) content, read once.
    fn digest(&self) -> Result<String, String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut f = std::fs::File::open(&self.path).map_err(err)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; READ];
        let mut at = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            self.patch(at, &mut buf[..n]);
            h.update(&buf[..n]);
            at += n as u64;
        }
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// A request body streaming bytes `offset..offset + len`.
    fn body(&self, offset: u64, len: u64) -> Body {
        let src = self.clone();
        let state = (None::<tokio::fs::File>, offset, len);
        let stream = futures::stream::try_unfold(state, move |(file, at, left)| {
            let src = src.clone();
            async move {
                if left == 0 {
                    return Ok(None);
                }
                let mut f = match file {
                    Some(f) => f,
                    None => {
                        let mut f = tokio::fs::File::open(&src.path).await?;
                        f.seek(SeekFrom::Start(at)).await?;
                        f
                    }
                };
                let mut buf = vec![0u8; left.min(READ as u64) as usize];
                f.read_exact(&mut buf).await?;
                src.patch(at, &mut buf);
                let n = buf.len() as u64;
                Ok(Some((
                    Frame::data(Bytes::from(buf)),
                    (Some(f), at + n, left - n),
                )))
            }
        });
        StreamBody::new(stream).boxed_unsync()
    }
}

async fn send(
    http: &Http,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Body,
) -> Result<Response<hyper::body::Incoming>, String> {
    let mut req = Request::builder().method(method.clone()).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req.body(body).map_err(|e| format!("{method} {url}: {e}"))?;
    http.request(req)
        .await
        .map_err(|e| format!("{method} {url}: {e}"))
}

/// Drains a body; returns its length.
async fn drain(resp: Response<hyper::body::Incoming>) -> Result<u64, String> {
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading a body: {e}"))?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// Sends, drains, and checks the status; returns the response's `Location` made absolute.
async fn expect(
    http: &Http,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Body,
    want: StatusCode,
) -> Result<Option<String>, String> {
    let resp = send(http, method.clone(), url, headers, body).await?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| absolute(url, l));
    let text = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    if status != want {
        return Err(format!("{method} {url}: {status} (wanted {want}): {text}"));
    }
    Ok(location)
}

/// `location` resolved against the URL it came from (registries may answer a path).
fn absolute(from: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let origin_end = from
        .find("://")
        .and_then(|i| from[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(from.len());
    format!("{}{location}", &from[..origin_end])
}

fn with_query(url: &str, q: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{q}")
}

fn octets(len: u64) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/octet-stream".to_owned()),
        ("content-length", len.to_string()),
    ]
}

/// POST an upload session; its Location.
async fn start_upload(http: &Http, base: &str, repo: &str) -> Result<String, String> {
    let url = format!("{base}/v2/{repo}/blobs/uploads/");
    expect(http, Method::POST, &url, &[], empty(), StatusCode::ACCEPTED)
        .await?
        .ok_or_else(|| format!("POST {url}: no Location"))
}

/// POST, then `PUT ?digest=` with the whole body.
async fn post_put(
    http: &Http,
    base: &str,
    repo: &str,
    src: &Source,
    digest: &str,
) -> Result<(), String> {
    let loc = start_upload(http, base, repo).await?;
    let url = with_query(&loc, &format!("digest={digest}"));
    let body = src.body(0, src.len);
    expect(
        http,
        Method::PUT,
        &url,
        &octets(src.len),
        body,
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// One `POST ?digest=` carrying the body; the status it got.
async fn single_post(
    http: &Http,
    base: &str,
    repo: &str,
    src: &Source,
    digest: &str,
) -> Result<StatusCode, String> {
    let url = format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}");
    let resp = send(
        http,
        Method::POST,
        &url,
        &octets(src.len),
        src.body(0, src.len),
    )
    .await?;
    let status = resp.status();
    drain(resp).await?;
    Ok(status)
}

/// POST, a PATCH per `chunk` bytes with `Content-Range`, then `PUT ?digest=` with no body.
async fn chunked(
    http: &Http,
    base: &str,
    repo: &str,
    src: &Source,
    digest: &str,
    chunk: u64,
) -> Result<(), String> {
    let mut loc = start_upload(http, base, repo).await?;
    let mut at = 0;
    while at < src.len {
        let n = chunk.min(src.len - at);
        let mut h = octets(n);
        h.push(("content-range", format!("{at}-{}", at + n - 1)));
        loc = expect(
            http,
            Method::PATCH,
            &loc,
            &h,
            src.body(at, n),
            StatusCode::ACCEPTED,
        )
        .await?
        .ok_or_else(|| "PATCH: no Location".to_owned())?;
        at += n;
    }
    let url = with_query(&loc, &format!("digest={digest}"));
    let h = [("content-length", "0".to_owned())];
    expect(http, Method::PUT, &url, &h, empty(), StatusCode::CREATED).await?;
    Ok(())
}

/// The Content-Length a blob HEAD answers, or an error unless 200.
async fn blob_size(http: &Http, base: &str, repo: &str, digest: &str) -> Result<u64, String> {
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    let resp = send(http, Method::HEAD, &url, &[], empty()).await?;
    if resp.status() != StatusCode::OK {
        return Err(format!("HEAD {url}: {}", resp.status()));
    }
    resp.headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| format!("HEAD {url}: no Content-Length"))
}

fn random_file(path: &Path, size: u64) -> Result<(), String> {
    let mut from = std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?;
    let mut to = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::copy(&mut (&mut from).take(size), &mut to).map_err(|e| e.to_string())?;
    Ok(())
}

/// `make-image DIR SIZE...`: random layers `l0`.. of the sizes given, `config.json`,
/// `manifest.json` (Docker schema 2) and `digests` (one `file digest size` line per blob).
pub fn make_image(args: &[String]) -> Result<String, String> {
    let [dir, sizes @ ..] = args else {
        return Err("usage: make-image DIR SIZE...".into());
    };
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut digests = String::new();
    let mut layers = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let size: u64 = size.parse().map_err(|e| format!("size {size}: {e}"))?;
        let name = format!("l{i}");
        random_file(&dir.join(&name), size)?;
        let d = Source::open(&dir.join(&name).to_string_lossy(), "")?.digest()?;
        digests.push_str(&format!("{name} {d} {size}\n"));
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": size, "digest": d,
        }));
    }
    let tag = format!(
        "{}-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        uuid::Uuid::new_v4()
    );
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": []}, "bench": tag,
    })
    .to_string();
    let cfg_digest = format!("sha256:{}", hex::encode(Sha256::digest(config.as_bytes())));
    digests.push_str(&format!("config.json {cfg_digest} {}\n", config.len()));
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": config.len(), "digest": cfg_digest},
        "layers": layers,
    });
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write("config.json", &config)?;
    write("manifest.json", &manifest.to_string())?;
    write("digests", &digests)?;
    Ok(format!("blobs={} dir={}", sizes.len() + 1, dir.display()))
}

/// `push-image BASE REPO TAG DIR`: every blob of `make-image`'s DIR (POST, then `PUT ?digest=`
/// with the body), then the manifest; checks each blob's size with a HEAD afterwards.
pub fn push_image(args: &[String]) -> Result<String, String> {
    let [base, repo, tag, dir] = args else {
        return Err("usage: push-image BASE REPO TAG DIR".into());
    };
    let dir = Path::new(dir);
    let list = std::fs::read_to_string(dir.join("digests")).map_err(|e| format!("digests: {e}"))?;
    runtime().block_on(async {
        let http = client();
        let mut bytes = 0;
        for line in list.lines() {
            let mut f = line.split(' ');
            let (Some(file), Some(digest), Some(size)) = (f.next(), f.next(), f.next()) else {
                return Err(format!("bad digests line {line:?}"));
            };
            let src = Source::open(&dir.join(file).to_string_lossy(), "")?;
            post_put(&http, base, repo, &src, digest).await?;
            let got = blob_size(&http, base, repo, digest).await?;
            if got.to_string() != size {
                return Err(format!("{file}: HEAD says {got} bytes, pushed {size}"));
            }
            bytes += got;
        }
        let manifest = std::fs::read(dir.join("manifest.json")).map_err(|e| e.to_string())?;
        let url = format!("{base}/v2/{repo}/manifests/{tag}");
        let h = [("content-type", MANIFEST_TYPE.to_owned())];
        expect(
            &http,
            Method::PUT,
            &url,
            &h,
            full(manifest),
            StatusCode::CREATED,
        )
        .await?;
        Ok(format!("blobs={} bytes={bytes}", list.lines().count()))
    })
}

/// `probe BASE`: one 4 KiB `POST ?digest=` with the body to `bench/probe`; prints
/// `post_digest_status=` (201 where the single-request monolithic push works; distribution 2.8
/// answers 202 and drops the body).
pub fn probe(args: &[String]) -> Result<String, String> {
    let [base] = args else {
        return Err("usage: probe BASE".into());
    };
    let path = std::env::temp_dir().join(format!("loadgen-probe-{}", uuid::Uuid::new_v4()));
    random_file(&path, 4096)?;
    let src = Source::open(&path.to_string_lossy(), "")?;
    let result = src.digest().and_then(|d| {
        runtime().block_on(async { single_post(&client(), base, "bench/probe", &src, &d).await })
    });
    let _ = std::fs::remove_file(&path);
    Ok(format!("post_digest_status={}", result?.as_u16()))
}

/// `push-blob [--mode post|post-put|chunked] [--chunk BYTES] [--salt TEXT] BASE REPO FILE`:
/// the digest first (not timed), then one timed push: `post` = one `POST ?digest=` with the
/// body; `post-put` = POST, then `PUT ?digest=` with the body; `chunked` = POST, a PATCH per
/// `--chunk` bytes (default 16 MiB), `PUT ?digest=`. A HEAD checks the size afterwards.
pub fn push_blob(args: Vec<String>) -> Result<String, String> {
    let usage = "usage: push-blob [--mode post|post-put|chunked] [--chunk BYTES] [--salt TEXT] BASE REPO FILE";
    let (mut mode, mut chunk, mut salt) = ("post-put".to_owned(), 16u64 << 20, String::new());
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{usage}"))
        };
        match a.as_str() {
            "--mode" => mode = value()?,
            "--chunk" => chunk = value()?.parse().map_err(|e| format!("--chunk: {e}"))?,
            "--salt" => salt = value()?,
            _ => rest.push(a),
        }
    }
    let [base, repo, file] = rest.as_slice() else {
        return Err(usage.into());
    };
    let src = Source::open(file, &salt)?;
    let digest = src.digest()?;
    runtime().block_on(async {
        let http = client();
        let started = Instant::now();
        match mode.as_str() {
            "post" => {
                let status = single_post(&http, base, repo, &src, &digest).await?;
                if status != StatusCode::CREATED {
                    return Err(format!("POST ?digest=: {status}"));
                }
            }
            "post-put" => post_put(&http, base, repo, &src, &digest).await?,
            "chunked" if chunk > 0 => chunked(&http, base, repo, &src, &digest, chunk).await?,
            m => return Err(format!("mode {m:?}\n{usage}")),
        }
        let secs = started.elapsed().as_secs_f64();
        let got = blob_size(&http, base, repo, &digest).await?;
        if got != src.len {
            return Err(format!("pushed {} bytes, HEAD says {got}", src.len));
        }
        Ok(format!(
            "seconds={secs:.6} mbps={:.3} bytes={got} digest={digest}",
            got as f64 / 1e6 / secs
        ))
    })
}

/// `pull BASE REPO TAG`: GET the manifest, then its config and layers all at once, each on
/// its own connection; checks each status and size. Prints the whole time and the time to
/// the first byte of the largest blob (from its request to its response head).
pub fn pull(args: &[String]) -> Result<String, String> {
    let [base, repo, tag] = args else {
        return Err("usage: pull BASE REPO TAG".into());
    };
    runtime().block_on(async {
        let http = client();
        let started = Instant::now();
        let url = format!("{base}/v2/{repo}/manifests/{tag}");
        let resp = send(
            &http,
            Method::GET,
            &url,
            &[("accept", ACCEPT.to_owned())],
            empty(),
        )
        .await?;
        if resp.status() != StatusCode::OK {
            return Err(format!("GET {url}: {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let m: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("manifest: {e}"))?;
        let mut blobs = vec![m["config"].clone()];
        blobs.extend(m["layers"].as_array().cloned().unwrap_or_default());
        let tasks: Vec<_> = blobs
            .iter()
            .map(|b| {
                let digest = b["digest"].as_str().unwrap_or_default().to_owned();
                let size = b["size"].as_u64().unwrap_or(0);
                let url = format!("{base}/v2/{repo}/blobs/{digest}");
                let http = http.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let resp = send(&http, Method::GET, &url, &[], empty()).await?;
                    let ttfb = t0.elapsed().as_secs_f64();
                    let status = resp.status();
                    let got = drain(resp).await?;
                    if status != StatusCode::OK || got != size {
                        return Err(format!("GET {url}: {status} with {got} of {size} bytes"));
                    }
                    Ok::<_, String>((size, ttfb))
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.map_err(|e| e.to_string())??);
        }
        let secs = started.elapsed().as_secs_f64();
        let bytes: u64 = results.iter().map(|r| r.0).sum();
        let largest = results
            .iter()
            .max_by_key(|r| r.0)
            .ok_or("a manifest with no blobs")?;
        Ok(format!(
            "seconds={secs:.6} ttfb_largest={:.6} blobs={} bytes={bytes}",
            largest.1,
            results.len()
        ))
    })
}
