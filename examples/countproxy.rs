//! A TCP proxy that counts the bytes each way, for the bench (`examples/bench`): put it in front of
//! an upstream registry to measure what a mirror fetched from it.
//!
//! Usage: `countproxy LISTEN UPSTREAM CONTROL [RATE]` (e.g. `127.0.0.1:0 127.0.0.1:5000
//! 127.0.0.1:0`). With RATE (bytes/s), the bytes upstream→client are paced to that rate in all,
//! over every connection together: a simulated WAN link to the upstream. Prints the two bound addresses (proxy, then control) on stdout, one per line. Any request
//! to the control address is answered with the running totals as one line of text:
//! `upstream_to_client=.. client_to_upstream=.. connections=..`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Counters {
    down: AtomicU64,
    up: AtomicU64,
    connections: AtomicU64,
    /// Bytes/s allowed upstream→client over all connections; 0 = unlimited.
    rate: u64,
    /// When the link is free again (pacing state when `rate` is set).
    link_free: Mutex<Option<Instant>>,
}

impl Counters {
    /// Waits until `n` more bytes fit on the paced link.
    async fn pace(&self, n: usize) {
        if self.rate == 0 {
            return;
        }
        let send_at = {
            let mut free = self.link_free.lock().expect("pacing lock");
            let now = Instant::now();
            let start = free.map_or(now, |f| f.max(now));
            *free = Some(start + Duration::from_secs_f64(n as f64 / self.rate as f64));
            start
        };
        tokio::time::sleep_until(send_at.into()).await;
    }
}

/// Copies `from` to `to` until end of stream, adding each chunk to `counter` as it passes
/// (not at the end: a mirror keeps its upstream connections open).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<Counters>,
    down: bool,
) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if down {
            counter.pace(n).await;
        }
        let c = if down { &counter.down } else { &counter.up };
        c.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn proxy(client: TcpStream, upstream: String, counters: Arc<Counters>) {
    let server = match TcpStream::connect(&upstream).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("countproxy: connect {upstream}: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pump(cr, sw, counters.clone(), false));
    pump(sr, cw, counters, true).await;
    let _ = up.await;
}

async fn control(mut s: TcpStream, counters: Arc<Counters>) {
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf).await;
    let line = format!(
        "upstream_to_client={} client_to_upstream={} connections={}\n",
        counters.down.load(Ordering::Relaxed),
        counters.up.load(Ordering::Relaxed),
        counters.connections.load(Ordering::Relaxed),
    );
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{line}",
        line.len()
    );
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, ctl, rate) = match args.as_slice() {
        [l, u, c] => (l, u, c, 0),
        [l, u, c, r] => match r.parse::<u64>() {
            Ok(r) => (l, u, c, r),
            Err(e) => {
                eprintln!("countproxy: RATE {r:?}: {e}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: countproxy LISTEN UPSTREAM CONTROL [RATE]");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(listen).await?;
    let control_listener = TcpListener::bind(ctl).await?;
    println!("{}", listener.local_addr()?);
    println!("{}", control_listener.local_addr()?);
    std::io::stdout().flush()?;
    let counters = Arc::new(Counters {
        rate,
        ..Counters::default()
    });
    {
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = control_listener.accept().await {
                tokio::spawn(control(s, counters.clone()));
            }
        });
    }
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(proxy(client, upstream.clone(), counters.clone()));
    }
}
