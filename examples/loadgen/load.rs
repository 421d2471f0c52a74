//! `loadgen load`: HTTP/1.1 keep-alive load (wrk hangs on HEAD answers).
//!
//! Opens `-c` connections to one URL and sends GET or HEAD requests back to back on each,
//! draining every body, either for `-d` seconds or until `-n` requests in all were answered.
//! Latencies go into an HDR histogram (µs), from which the percentiles are read. Prints one
//! line of `key=value` pairs:
//!
//! ```text
//! requests=.. errors=.. seconds=.. rps=.. bytes=.. gbps=.. p50_us=.. p99_us=.. max_us=..
//! ```
//!
//! `errors` counts non-2xx answers, short bodies (`--expect-bytes`) and connection failures.
//!
//! Three clients (`--client`):
//! - `hyper` (default): hyper's HTTP/1.1 client, which reads into a buffer that grows to
//!   hundreds of KiB and so drains a socket faster than most clients do;
//! - `go`: reads like Go's `net/http` body under `io.Copy` (how dockerd, containerd and skopeo
//!   read a layer): the response head through a 4 KiB buffer, then the body with reads of at
//!   most `--read-size` bytes (default 32 KiB, as Go) straight from the non-blocking socket,
//!   waiting on readiness whenever it is empty (`--read-size N` alone also selects it);
//! - `curl`: `-c` curl processes, each with its share of the `-n` GETs on one keep-alive
//!   connection (GET only; needs `-n`).
//!
//! `https://` URLs (hyper client only) trust the certificate in `--cacert FILE` and speak
//! HTTP/1.1, or h2 with `--h2` (ALPN).
//!
//! Usage: `loadgen load [-c N] [-d SECS | -n REQUESTS] [-m GET|HEAD] [-t THREADS]
//!         [-H 'Name: value']... [--expect-bytes N] [--client hyper|go|curl] [--read-size N]
//!         [--cacert FILE] [--h2] URL`

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

use crate::tls;

#[derive(Clone, Copy, PartialEq)]
pub enum Client {
    Hyper,
    Go,
    Curl,
}

pub struct Options {
    pub connections: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub method: hyper::Method,
    pub threads: usize,
    pub headers: Vec<(String, String)>,
    pub expect_bytes: Option<u64>,
    pub client: Client,
    /// Go-style client: body reads of at most this many bytes (see the module doc).
    pub read_size: usize,
    pub authority: String,
    pub path: String,
    /// `https://` URLs: the TLS client (trusting `--cacert`), and whether to speak h2.
    pub tls: Option<Arc<tls::Client>>,
    pub h2: bool,
}

fn usage(msg: &str) -> String {
    format!(
        "{msg}\nusage: loadgen load [-c N] [-d SECS | -n REQUESTS] [-m GET|HEAD] [-t THREADS] \
         [-H 'Name: value']... [--expect-bytes N] [--client hyper|go|curl] [--read-size N] \
         [--cacert FILE] [--h2] http[s]://HOST:PORT/PATH"
    )
}

pub fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let mut args = args.into_iter();
    let mut o = Options {
        connections: 1,
        duration: None,
        requests: None,
        method: hyper::Method::GET,
        threads: 1,
        headers: Vec::new(),
        expect_bytes: None,
        client: Client::Hyper,
        read_size: 32 * 1024,
        authority: String::new(),
        path: String::new(),
        tls: None,
        h2: false,
    };
    let mut url = None;
    let mut cacert = None;
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| usage(&format!("{a} needs a value")))
        };
        let number = |v: String| v.parse::<f64>().map_err(|e| usage(&format!("{v}: {e}")));
        match a.as_str() {
            "-c" => o.connections = number(value()?)? as usize,
            "-d" => o.duration = Some(Duration::from_secs_f64(number(value()?)?)),
            "-n" => o.requests = Some(number(value()?)? as u64),
            "-t" => o.threads = number(value()?)? as usize,
            "-m" => {
                o.method = value()?
                    .to_ascii_uppercase()
                    .parse()
                    .map_err(|e| usage(&format!("method: {e}")))?
            }
            "-H" => {
                let h = value()?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| usage(&format!("header {h:?} has no ':'")))?;
                o.headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "--expect-bytes" => o.expect_bytes = Some(number(value()?)? as u64),
            "--h2" => o.h2 = true,
            "--cacert" => cacert = Some(value()?),
            "--read-size" => {
                o.read_size = (number(value()?)? as usize).max(1);
                o.client = Client::Go;
            }
            "--client" => {
                o.client = match value()?.as_str() {
                    "hyper" => Client::Hyper,
                    "go" => Client::Go,
                    "curl" => Client::Curl,
                    c => return Err(usage(&format!("unknown client {c:?}"))),
                }
            }
            "-h" | "--help" => return Err(usage("")),
            _ if url.is_none() && !a.starts_with('-') => url = Some(a),
            _ => return Err(usage(&format!("unexpected argument {a:?}"))),
        }
    }
    let url = url.ok_or_else(|| usage("no URL"))?;
    let rest = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => rest,
        (None, Some(rest)) => {
            let ca = cacert
                .as_deref()
                .ok_or_else(|| usage("https:// needs --cacert"))?;
            o.tls = Some(Arc::new(tls::Client::new(ca, o.h2)?));
            rest
        }
        (None, None) => return Err(usage("only http:// and https:// URLs")),
    };
    if o.h2 && o.tls.is_none() {
        return Err(usage("--h2 needs an https:// URL"));
    }
    if o.tls.is_some() && o.client != Client::Hyper {
        return Err(usage("https:// only with the hyper client"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    o.authority = authority.to_owned();
    o.path = path.to_owned();
    if o.duration.is_none() && o.requests.is_none() {
        o.duration = Some(Duration::from_secs(10));
    }
    if o.connections == 0 || o.threads == 0 {
        return Err(usage("-c and -t must be at least 1"));
    }
    if o.client == Client::Curl && (o.requests.is_none() || o.method != hyper::Method::GET) {
        return Err(usage("--client curl needs -n and GET"));
    }
    Ok(o)
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

/// A failed connect: counted as an error, reported, and retried after a short pause.
async fn connect_failed(o: &Options, totals: &Totals, e: impl std::fmt::Display) {
    eprintln!("loadgen: connect {}: {e}", o.authority);
    totals.errors.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Whether a connection's loop is done: the deadline passed, or the shared request budget ran
/// out (taking one request from it otherwise).
fn finished(o: &Options, deadline: Option<Instant>, budget: &AtomicI64) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
        || (o.requests.is_some() && budget.fetch_sub(1, Ordering::Relaxed) <= 0)
}

/// One connection's loop: sends requests until the deadline passes or the shared request
/// budget runs out, reconnecting after a failure.
async fn connection(
    o: Arc<Options>,
    deadline: Option<Instant>,
    budget: Arc<AtomicI64>,
    totals: Arc<Totals>,
) -> Histogram<u64> {
    let mut hist = new_histogram();
    let mut sender = None;
    loop {
        if finished(&o, deadline, &budget) {
            break;
        }
        if sender.is_none() {
            match open(&o).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    connect_failed(&o, &totals, e).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected above");
        let req = request(&o);
        let started = Instant::now();
        let ok = match s.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let mut body = resp.into_body();
                let mut n = 0u64;
                let mut failed = false;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => {
                            if let Some(d) = f.data_ref() {
                                n += d.len() as u64;
                            }
                        }
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                totals.bytes.fetch_add(n, Ordering::Relaxed);
                let short =
                    o.method == hyper::Method::GET && o.expect_bytes.is_some_and(|e| e != n);
                status.is_success() && !failed && !short
            }
            Err(_) => false,
        };
        let micros = started.elapsed().as_micros().max(1) as u64;
        let _ = hist.record(micros.min(600_000_000));
        totals.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            totals.errors.fetch_add(1, Ordering::Relaxed);
            sender = None;
        }
    }
    hist
}

/// The `--read-size` loop: like [`connection`], with the Go-style client.
async fn go_style_connection(
    o: Arc<Options>,
    deadline: Option<Instant>,
    budget: Arc<AtomicI64>,
    totals: Arc<Totals>,
) -> Histogram<u64> {
    let mut hist = new_histogram();
    let mut buf = vec![0u8; o.read_size];
    let mut stream = None;
    loop {
        if finished(&o, deadline, &budget) {
            break;
        }
        if stream.is_none() {
            match TcpStream::connect(&o.authority).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(e) => {
                    connect_failed(&o, &totals, e).await;
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        let started = Instant::now();
        let got = go_style_request(&o, s, &mut buf).await;
        let micros = started.elapsed().as_micros().max(1) as u64;
        let _ = hist.record(micros.min(600_000_000));
        totals.requests.fetch_add(1, Ordering::Relaxed);
        let ok = match got {
            Ok((status, n)) => {
                totals.bytes.fetch_add(n, Ordering::Relaxed);
                let short =
                    o.method == hyper::Method::GET && o.expect_bytes.is_some_and(|e| e != n);
                (200..300).contains(&status) && !short
            }
            Err(_) => false,
        };
        if !ok {
            totals.errors.fetch_add(1, Ordering::Relaxed);
            stream = None;
        }
    }
    hist
}

/// One request of the Go-style client: writes the request, reads the head through a 4 KiB
/// buffer (Go's `bufio.Reader` default), then the body (`Content-Length` only) in reads of at
/// most `buf.len()` bytes, capped at what is left, as Go's `io.LimitReader` does. Returns the
/// status and the body bytes read.
async fn go_style_request(
    o: &Options,
    s: &mut TcpStream,
    buf: &mut [u8],
) -> std::io::Result<(u16, u64)> {
    use std::io::{Error, ErrorKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen-go-style\r\n",
        o.method, o.path, o.authority
    );
    for (k, v) in &o.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 64 * 1024 {
            return Err(Error::new(ErrorKind::InvalidData, "response head too long"));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let text = std::str::from_utf8(&head[..end])
        .map_err(|_| Error::new(ErrorKind::InvalidData, "response head is not UTF-8"))?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no status code"))?;
    let length = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok());
    let length = match (&o.method, length) {
        (&hyper::Method::HEAD, _) => 0,
        (_, Some(n)) => n,
        (_, None) => {
            return Err(Error::new(ErrorKind::InvalidData, "no Content-Length"));
        }
    };
    let mut got = (head.len() - end) as u64;
    while got < length {
        let want = (buf.len() as u64).min(length - got) as usize;
        let n = s.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        got += n as u64;
    }
    if got > length {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "more body than Content-Length",
        ));
    }
    Ok((status, got))
}

/// The request `o` describes: method, path, `Host` and the `-H` headers.
pub fn request(o: &Options) -> Request<Empty<Bytes>> {
    let mut req = Request::builder()
        .method(o.method.clone())
        .uri(o.path.as_str())
        .header(hyper::header::HOST, o.authority.as_str());
    for (k, v) in &o.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(Empty::<Bytes>::new()).expect("valid request")
}

/// One connection's request sender: HTTP/1.1 (plain or TLS) or h2 (TLS).
pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    pub async fn send_request(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
    }
}

/// Connects to `o.authority` (TLS for `https://`) and hands the connection to hyper.
pub async fn open(o: &Options) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(&o.authority).await?;
    stream.set_nodelay(true)?;
    let Some(tls) = &o.tls else {
        return h1(TokioIo::new(stream)).await;
    };
    let host = o
        .authority
        .rsplit_once(':')
        .map_or(o.authority.as_str(), |(h, _)| h);
    let stream = tls.connect(host, stream).await?;
    if !o.h2 {
        return h1(TokioIo::new(stream)).await;
    }
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(Sender::H2(sender))
}

async fn h1<I>(io: I) -> std::io::Result<Sender>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(Sender::H1(sender))
}

pub fn main(args: Vec<String>) -> ExitCode {
    let o = match parse_args(args) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if o.client == Client::Curl {
        return curl(&o);
    }
    runtime.block_on(async move {
        let totals = Arc::new(Totals::default());
        let budget = Arc::new(AtomicI64::new(o.requests.unwrap_or(0) as i64));
        let started = Instant::now();
        let deadline = o.duration.map(|d| started + d);
        let tasks: Vec<_> = (0..o.connections)
            .map(|_| {
                let (o, budget, totals) = (o.clone(), budget.clone(), totals.clone());
                if o.client == Client::Go {
                    tokio::spawn(go_style_connection(o, deadline, budget, totals))
                } else {
                    tokio::spawn(connection(o, deadline, budget, totals))
                }
            })
            .collect();
        let mut hist = new_histogram();
        for t in tasks {
            hist.add(t.await.expect("connection task"))
                .expect("same bounds");
        }
        report(started.elapsed().as_secs_f64(), &totals, &hist)
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Prints the result line; exit status 1 when anything failed.
fn report(secs: f64, totals: &Totals, hist: &Histogram<u64>) -> ExitCode {
    let requests = totals.requests.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let bytes = totals.bytes.load(Ordering::Relaxed);
    println!(
        "requests={requests} errors={errors} seconds={secs:.3} rps={:.0} bytes={bytes} \
         gbps={:.3} p50_us={} p99_us={} max_us={}",
        requests as f64 / secs,
        bytes as f64 / secs / 1e9,
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.max(),
    );
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The curl client: `-c` curl processes at once, the `-n` GETs shared out among them, each
/// process doing its share on one keep-alive connection; one result line for them all.
fn curl(o: &Options) -> ExitCode {
    let url = format!("http://{}{}", o.authority, o.path);
    let gets = o.requests.expect("checked in parse_args");
    let n = o.connections as u64;
    let started = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|i| {
            let share = gets / n + u64::from(i < gets % n);
            let mut cmd = std::process::Command::new("curl");
            cmd.args([
                "-sS",
                "-w",
                "%{http_code} %{size_download} %{time_total}\\n",
            ]);
            for (k, v) in &o.headers {
                cmd.arg("-H").arg(format!("{k}: {v}"));
            }
            for _ in 0..share {
                cmd.args(["-o", "/dev/null", &url]);
            }
            cmd.stdout(std::process::Stdio::piped())
                .spawn()
                .map(|c| (share, c))
        })
        .collect();
    let totals = Totals::default();
    let mut hist = new_histogram();
    for child in children {
        let (share, out) = match child.and_then(|(share, c)| Ok((share, c.wait_with_output()?))) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("loadgen: curl: {e}");
                totals.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut answered = 0;
        for line in text.lines() {
            let mut f = line.split(' ');
            let (Some(code), Some(size), Some(secs)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let size: u64 = size.parse().unwrap_or(0);
            let secs: f64 = secs.parse().unwrap_or(0.0);
            answered += 1;
            totals.requests.fetch_add(1, Ordering::Relaxed);
            totals.bytes.fetch_add(size, Ordering::Relaxed);
            let _ = hist.record(((secs * 1e6) as u64).clamp(1, 600_000_000));
            let ok = code.starts_with('2') && o.expect_bytes.is_none_or(|e| e == size);
            if !ok {
                totals.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !out.status.success() || answered < share {
            totals
                .errors
                .fetch_add((share - answered).max(1), Ordering::Relaxed);
        }
    }
    report(started.elapsed().as_secs_f64(), &totals, &hist)
}
