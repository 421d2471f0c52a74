//! `loadgen idle`: holds many idle keep-alive connections (issue 13: a fleet-sized mirror
//! holds a connection per node). Opens `-c` connections, at most 256 connecting at once, and
//! makes one request on each (`-m`, default HEAD, with the `-H` headers), so each is a used
//! keep-alive connection; then prints
//!
//! ```text
//! open=.. errors=.. seconds=..
//! ```
//!
//! and holds them, sending nothing, until its stdin gives a line or closes. Then it makes one
//! more request on every connection (no reconnecting) and prints `held=.. lost=..`: a
//! connection the server closed meanwhile is lost. Exits 1 when any connection failed.
//!
//! Usage: `loadgen idle -c N [-m HEAD|GET] [-H 'Name: value']... URL` (plain HTTP/1.1).

use crate::load::{self, Options, Sender};
use http_body_util::BodyExt;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Connections being opened at once (the listen backlog is finite).
const CONNECTING: usize = 256;

async fn request(o: &Options, s: &mut Sender) -> Result<(), String> {
    let resp = s
        .send_request(load::request(o))
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    Ok(())
}

pub fn main(mut args: Vec<String>) -> ExitCode {
    if !args.iter().any(|a| a == "-m") {
        args.splice(0..0, ["-m".to_owned(), "HEAD".to_owned()]);
    }
    let o = match load::parse_args(args) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("{}", e.replace("loadgen load", "loadgen idle"));
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(CONNECTING));
        let opening: Vec<_> = (0..o.connections)
            .map(|_| {
                let (o, gate) = (o.clone(), gate.clone());
                tokio::spawn(async move {
                    let _permit = gate.acquire().await.expect("never closed");
                    let mut s = load::open(&o).await.map_err(|e| e.to_string())?;
                    request(&o, &mut s).await?;
                    Ok::<_, String>(s)
                })
            })
            .collect();
        let mut senders = Vec::with_capacity(o.connections);
        let mut errors = 0;
        for t in opening {
            match t.await.expect("connection task") {
                Ok(s) => senders.push(s),
                Err(e) => {
                    if errors == 0 {
                        eprintln!("loadgen idle: {e}");
                    }
                    errors += 1;
                }
            }
        }
        println!(
            "open={} errors={errors} seconds={:.3}",
            senders.len(),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        })
        .await;
        let checks: Vec<_> = senders
            .into_iter()
            .map(|mut s| {
                let o = o.clone();
                tokio::spawn(async move { request(&o, &mut s).await.is_ok() })
            })
            .collect();
        let mut held = 0;
        let mut lost = 0;
        for c in checks {
            if c.await.unwrap_or(false) {
                held += 1;
            } else {
                lost += 1;
            }
        }
        println!("held={held} lost={lost}");
        if errors > 0 || lost > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    })
}
