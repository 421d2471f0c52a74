//! A webhook receiver for notification tests: a real HTTP server on 127.0.0.1:0 that records
//! every request (method, path, headers, body) and answers as told — 200, any status (a fixed
//! number of times, then back to 200), 429 with `Retry-After`, a stall (no answer until told
//! to recover), or refused connections (the port closed, then reopened on recovery).
//!
//! Tests wait on what it records ([`Receiver::wait_for`]), never on sleeps. Self-contained:
//! tokio, hyper, hyper-util, http-body-util, bytes, serde_json; no stevedore types. Stops when
//! dropped.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lowercased; repeated headers keep every value, in order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Bytes,
    /// The status the receiver answered (0 when it stalled and never answered).
    pub status: u16,
    /// When it arrived (its body read).
    pub at: std::time::Instant,
}

impl Received {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The events of a distribution envelope body.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200 to everything.
    Accept,
    /// `status` to the next `times` requests (recorded), then 200.
    Fail { status: u16, times: usize },
    /// `status` to every request until told otherwise.
    FailAlways { status: u16 },
    /// 429 with `Retry-After: secs` to the next `times` requests, then 200.
    RateLimited { retry_after_secs: u64, times: usize },
    /// Reads each request, records it, and never answers until the mode changes.
    Stall,
}

struct State {
    log: Mutex<Vec<Received>>,
    mode: Mutex<Mode>,
    changed: Notify,
    mode_tx: watch::Sender<u64>,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    /// A receiver answering 200 on 127.0.0.1:0.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mode_tx, _) = watch::channel(0);
        let state = Arc::new(State {
            log: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Accept),
            changed: Notify::new(),
            mode_tx,
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Receiver {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Changes how the receiver answers; stalled requests are released at once (with a 503
    /// that is recorded as no answer, status 0).
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
        self.state.mode_tx.send_modify(|n| *n += 1);
    }

    /// Closes the port: connections are refused until [`Receiver::reopen`].
    pub fn refuse(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Listens again on the same port after [`Receiver::refuse`].
    pub async fn reopen(&self) {
        let listener = loop {
            // The port was ours a moment ago; another process taking it is very unlikely.
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        *self.task.lock().unwrap() = Some(tokio::spawn(accept_loop(listener, self.state.clone())));
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// The requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits (up to `timeout`) until `f` holds for the recorded requests.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&[Received]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            if f(&self.state.log.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return f(&self.state.log.lock().unwrap());
            }
        }
    }

    /// Waits until `n` requests were accepted (2xx).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |log| {
            log.iter()
                .filter(|r| (200..300).contains(&r.status))
                .count()
                >= n
        })
        .await
    }

    /// Waits until `n` requests arrived, whatever the answer.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |log| log.len() >= n).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.refuse();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        // Connections die with the accept loop (refuse() aborts it, and the JoinSet with it).
        conns.spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut mode_rx = state.mode_tx.subscribe();
    mode_rx.borrow_and_update();
    let (status, retry_after) = {
        let mut mode = state.mode.lock().unwrap();
        match &mut *mode {
            Mode::Accept => (200, None),
            Mode::FailAlways { status } => (*status, None),
            Mode::Fail { status, times } => {
                let s = *status;
                *times = times.saturating_sub(1);
                if *times == 0 {
                    *mode = Mode::Accept;
                }
                (s, None)
            }
            Mode::RateLimited {
                retry_after_secs,
                times,
            } => {
                let r = *retry_after_secs;
                *times = times.saturating_sub(1);
                if *times == 0 {
                    *mode = Mode::Accept;
                }
                (429, Some(r))
            }
            Mode::Stall => (0, None),
        }
    };
    state.log.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body,
        status,
        at: std::time::Instant::now(),
    });
    state.changed.notify_waiters();
    if status == 0 {
        // Stalled: no answer until the mode changes; then a 503 the sender has most likely
        // given up on, so the record keeps status 0 ("never answered").
        let _ = mode_rx.changed().await;
        return Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let mut resp = Response::builder().status(StatusCode::from_u16(status).unwrap());
    if let Some(r) = retry_after {
        resp = resp.header("retry-after", r.to_string());
    }
    Ok(resp.body(Full::new(Bytes::new())).unwrap())
}
