//! HTTP/1.1 keep-alive load generator for `bench/run.sh` (wrk hangs on HEAD answers).
//!
//! Opens `-c` connections to one URL and sends GET or HEAD requests back to back on each,
//! draining every body, either for `-d` seconds or until `-n` requests in all were answered.
//! Latencies go into an HDR histogram (µs). Prints one line of `key=value` pairs:
//!
//! ```text
//! requests=.. errors=.. seconds=.. rps=.. bytes=.. gbps=.. p50_us=.. p99_us=.. max_us=..
//! ```
//!
//! `errors` counts non-2xx answers, short bodies (`--expect-bytes`) and connection failures.
//!
//! `--read-size N` swaps hyper for a client that reads like Go's `net/http` body under
//! `io.Copy` (how dockerd, containerd and skopeo read a layer): the response head through a
//! 4 KiB buffer, then the body with reads of at most N bytes (Go: 32 KiB) straight from the
//! non-blocking socket, waiting on readiness whenever it is empty. hyper instead reads into a
//! buffer that grows to hundreds of KiB, which drains a socket faster than most clients do.
//!
//! Usage: `loadgen [-c N] [-d SECS | -n REQUESTS] [-m GET|HEAD] [-t THREADS]
//!         [-H 'Name: value']... [--expect-bytes N] [--read-size N] URL`

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

struct Options {
    connections: usize,
    duration: Option<Duration>,
    requests: Option<u64>,
    method: hyper::Method,
    threads: usize,
    headers: Vec<(String, String)>,
    expect_bytes: Option<u64>,
    /// Go-style client: body reads of at most this many bytes (see the module doc).
    read_size: Option<usize>,
    authority: String,
    path: String,
}

fn usage(msg: &str) -> String {
    format!(
        "{msg}\nusage: loadgen [-c N] [-d SECS | -n REQUESTS] [-m GET|HEAD] [-t THREADS] \
         [-H 'Name: value']... [--expect-bytes N] [--read-size N] http://HOST:PORT/PATH"
    )
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        connections: 1,
        duration: None,
        requests: None,
        method: hyper::Method::GET,
        threads: 1,
        headers: Vec::new(),
        expect_bytes: None,
        read_size: None,
        authority: String::new(),
        path: String::new(),
    };
    let mut url = None;
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
            "--read-size" => o.read_size = Some((number(value()?)? as usize).max(1)),
            "-h" | "--help" => return Err(usage("")),
            _ if url.is_none() && !a.starts_with('-') => url = Some(a),
            _ => return Err(usage(&format!("unexpected argument {a:?}"))),
        }
    }
    let url = url.ok_or_else(|| usage("no URL"))?;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| usage("only http:// URLs"))?;
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
    Ok(o)
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

/// One connection's loop: sends requests until the deadline passes or the shared request
/// budget runs out, reconnecting after a failure.
async fn connection(
    o: Arc<Options>,
    deadline: Option<Instant>,
    budget: Arc<AtomicI64>,
    totals: Arc<Totals>,
) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    let mut sender = None;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if o.requests.is_some() && budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
            break;
        }
        if sender.is_none() {
            match open(&o.authority).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    eprintln!("loadgen: connect {}: {e}", o.authority);
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected above");
        let mut req = Request::builder()
            .method(o.method.clone())
            .uri(o.path.as_str())
            .header(hyper::header::HOST, o.authority.as_str());
        for (k, v) in &o.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Empty::<Bytes>::new()).expect("valid request");
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
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    let read_size = o.read_size.expect("go-style client needs --read-size");
    let mut buf = vec![0u8; read_size];
    let mut stream = None;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if o.requests.is_some() && budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
            break;
        }
        if stream.is_none() {
            match TcpStream::connect(&o.authority).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(e) => {
                    eprintln!("loadgen: connect {}: {e}", o.authority);
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
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

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn open(authority: &str) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

fn main() -> ExitCode {
    let o = match parse_args() {
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
    runtime.block_on(async move {
        let totals = Arc::new(Totals::default());
        let budget = Arc::new(AtomicI64::new(o.requests.unwrap_or(0) as i64));
        let started = Instant::now();
        let deadline = o.duration.map(|d| started + d);
        let tasks: Vec<_> = (0..o.connections)
            .map(|_| {
                let (o, budget, totals) = (o.clone(), budget.clone(), totals.clone());
                if o.read_size.is_some() {
                    tokio::spawn(go_style_connection(o, deadline, budget, totals))
                } else {
                    tokio::spawn(connection(o, deadline, budget, totals))
                }
            })
            .collect();
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
        for t in tasks {
            hist.add(t.await.expect("connection task"))
                .expect("same bounds");
        }
        let secs = started.elapsed().as_secs_f64();
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
    })
}
