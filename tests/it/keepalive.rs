//! Idle keep-alive connections (issue 13): an idle HTTP/1 connection is parked outside hyper
//! between requests (`stevedore_http_connections_parked`), and a parked connection serves its
//! next request, pipelined requests, and closes on the server's graceful shutdown.

use crate::common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PARKED: &str = "stevedore_http_connections_parked";

/// Waits (up to 20 s) until the gauge reads `want`; returns what it read last.
async fn gauge_becomes(s: &Server, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = s.metric(PARKED, &[]).await;
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads one response with a `Content-Length` body from `c` (bytes after it stay in `rest`).
async fn read_one(c: &mut TcpStream, rest: &mut Vec<u8>) -> (u16, Vec<u8>) {
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut chunk))
            .await
            .expect("no response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response head: {:?}",
            String::from_utf8_lossy(rest)
        );
        rest.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    while rest.len() < head_end + len {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut chunk))
            .await
            .expect("body stalled")
            .unwrap();
        assert!(n > 0, "closed mid-body");
        rest.extend_from_slice(&chunk[..n]);
    }
    let body = rest[head_end..head_end + len].to_vec();
    rest.drain(..head_end + len);
    (status, body)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests_pipelined_or_not() {
    let s = Server::start();
    let data = random_bytes(300 * 1024, 7);
    let d = push_blob(&s.url(""), "park/me", &data).await;
    let blob = format!("/v2/park/me/blobs/{d}");
    assert_eq!(gauge_becomes(&s, 0.0).await, 0.0);

    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    let mut rest = Vec::new();
    // A zero-copy blob answer, then the connection goes idle and is parked.
    c.write_all(&get(&blob)).await.unwrap();
    assert_eq!(read_one(&mut c, &mut rest).await, (200, data.clone()));
    assert_eq!(
        gauge_becomes(&s, 1.0).await,
        1.0,
        "the idle connection was not parked"
    );

    // Woken by its next request, on the same socket.
    c.write_all(&get("/v2/")).await.unwrap();
    assert_eq!(read_one(&mut c, &mut rest).await.0, 200);
    assert_eq!(gauge_becomes(&s, 1.0).await, 1.0);

    // Three pipelined requests in one write, the last one's head split across two writes.
    let mut burst = get(&blob);
    burst.extend(get("/v2/"));
    burst.extend(b"GET /v2/park/me/tags/list HTTP/1.1\r\n");
    c.write_all(&burst).await.unwrap();
    assert_eq!(read_one(&mut c, &mut rest).await, (200, data.clone()));
    assert_eq!(read_one(&mut c, &mut rest).await.0, 200);
    c.write_all(b"Host: x\r\n\r\n").await.unwrap();
    let (status, body) = read_one(&mut c, &mut rest).await;
    assert_eq!(
        (status, &body[..]),
        (200, &br#"{"name":"park/me","tags":[]}"#[..])
    );
    assert!(rest.is_empty());

    // A request sent the moment an answer arrives.
    for _ in 0..20 {
        c.write_all(&get("/v2/")).await.unwrap();
        assert_eq!(read_one(&mut c, &mut rest).await.0, 200);
    }
    assert_eq!(gauge_becomes(&s, 1.0).await, 1.0);

    // A client closing its parked connection frees it.
    drop(c);
    assert_eq!(
        gauge_becomes(&s, 0.0).await,
        0.0,
        "a closed parked connection stayed"
    );
}

#[tokio::test]
async fn parked_connections_close_on_the_idle_timeout() {
    let s = Server::start_with(Options {
        extra_yaml: "http:\n  limits:\n    idletimeout: 1s\n".into(),
        ..Options::default()
    });
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    let mut rest = Vec::new();
    c.write_all(&get("/v2/")).await.unwrap();
    assert_eq!(read_one(&mut c, &mut rest).await.0, 200);
    let answered = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("the parked connection outlived its idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let took = answered.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the idle timeout"
    );
    assert_eq!(gauge_becomes(&s, 0.0).await, 0.0);
}

#[tokio::test]
async fn graceful_shutdown_closes_parked_connections_promptly() {
    // A drain long enough that a connection left open would show.
    let mut s = Server::start_with(Options {
        extra_yaml: "http:\n  draintimeout: 60s\n  limits:\n    idletimeout: 0s\n".into(),
        ..Options::default()
    });
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&s.addr).await.unwrap();
        let mut rest = Vec::new();
        c.write_all(&get("/v2/")).await.unwrap();
        assert_eq!(read_one(&mut c, &mut rest).await.0, 200);
        conns.push(c);
    }
    assert_eq!(gauge_becomes(&s, 3.0).await, 3.0);
    let stopping = Instant::now();
    s.stop(); // SIGTERM, waits for the exit
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the server took {took:?} to stop"
    );
    assert!(
        s.child.try_wait().unwrap().is_some_and(|st| st.success()),
        "not a clean exit"
    );
    for mut c in conns {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("a parked connection stayed open after the shutdown")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
