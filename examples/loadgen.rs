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
//! Usage: `loadgen [-c N] [-d SECS | -n REQUESTS] [-m GET|HEAD] [-t THREADS]
//!         [-H 'Name: value']... [--expect-bytes N] URL`

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
    authority: String,
    path: String,
}

fn usage(msg: &str) -> String {
    format!(
        "{msg}\nusage: loadgen [-c N] [-d SECS | -n REQUESTS] [-m GET|HEAD] [-t THREADS] \
         [-H 'Name: value']... [--expect-bytes N] http://HOST:PORT/PATH"
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
                tokio::spawn(connection(
                    o.clone(),
                    deadline,
                    budget.clone(),
                    totals.clone(),
                ))
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
