//! Notifications, the delivery side: events published in a running stevedore (through
//! `POST /debug/notifications/test`) reach a real receiver as distribution sends them, survive
//! receiver failures, restarts and `kill -9`, are signed, filtered, and never hold up a request.

use crate::common::receiver::{Mode, Receiver};
use crate::common::{Options, Server, client, eventually, push_blob};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A server with `endpoints` (YAML list items, indented for `notifications.endpoints`).
fn server_with(endpoints: &str, data_dir: Option<std::path::PathBuf>) -> Server {
    Server::start_with(Options {
        extra_yaml: format!("notifications:\n  endpoints:\n{endpoints}"),
        data_dir,
        ..Options::default()
    })
}

/// One endpoint named `hook` posting to `url`, with `extra` keys (indented by 6).
fn endpoint(url: &str, extra: &str) -> String {
    format!(
        "    - name: hook\n      url: {url}\n      backoff: 20ms\n      maxbackoff: 200ms\n{extra}"
    )
}

/// Publishes a made-up event; returns its id.
async fn publish(s: &Server, query: &str) -> String {
    let resp = client()
        .post(s.debug_url(&format!("/debug/notifications/test?{query}")))
        .header("user-agent", "notify-test/1.0")
        .send()
        .await
        .expect("publish");
    assert_eq!(
        resp.status(),
        202,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let v: serde_json::Value = resp.json().await.expect("json");
    v["eventId"].as_str().expect("eventId").to_string()
}

/// Waits (up to [`WAIT`]) until `f` holds for `GET /debug/notifications`.
async fn status_until(s: &Server, f: impl Fn(&serde_json::Value) -> bool) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if f(&status(s).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Waits until the endpoint counted `n` events sent (the receiver records a request before
/// its answer reaches stevedore).
async fn sent(s: &Server, n: u64) -> bool {
    status_until(s, |st| st["endpoints"][0]["sent"].as_u64() == Some(n)).await
}

async fn status(s: &Server) -> serde_json::Value {
    client()
        .get(s.debug_url("/debug/notifications"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

async fn endpoint_status(s: &Server) -> serde_json::Value {
    status(s).await["endpoints"][0].clone()
}

#[tokio::test]
async fn an_event_arrives_as_registry_2_sends_it() {
    let rx = Receiver::start().await;
    let s = server_with(
        &endpoint(
            &rx.url("/events"),
            "      headers:\n        Authorization: [Bearer tok-123]\n        X-Multi: [a, b]\n",
        ),
        None,
    );
    let id = publish(
        &s,
        "action=push&repository=team/app&tag=v1&mediatype=application/vnd.oci.image.manifest.v1%2Bjson&size=42&digest=sha256:0000000000000000000000000000000000000000000000000000000000000001",
    )
    .await;
    assert!(rx.wait_for(1, WAIT).await, "no delivery");
    let r = &rx.accepted()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/events");
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.docker.distribution.events.v1+json")
    );
    assert_eq!(r.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(r.headers["x-multi"], vec!["a", "b"]);
    let body = std::str::from_utf8(&r.body).expect("utf-8");
    assert!(
        body.starts_with("{\n   \"events\": [\n      {\n         \"id\": "),
        "Go's MarshalIndent with three spaces: {body}"
    );
    let events = r.events();
    assert_eq!(events.len(), 1, "one event per request");
    let e = &events[0];
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["action"], "push");
    // The event's own keys (nine spaces deep), in distribution's order.
    let keys: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("         \""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "timestamp",
            "action",
            "target",
            "request",
            "actor",
            "source"
        ]
    );
    let ts = e["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.len() >= 20, "{ts}");
    let t = &e["target"];
    assert_eq!(t["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(t["size"], 42);
    assert_eq!(t["length"], 42);
    assert_eq!(t["repository"], "team/app");
    assert_eq!(t["tag"], "v1");
    assert_eq!(e["request"]["method"], "POST");
    assert_eq!(e["request"]["useragent"], "notify-test/1.0");
    assert_eq!(e["actor"], serde_json::json!({}));
    let src = &e["source"];
    assert!(
        src["addr"].as_str().is_some_and(|a| a.contains(':')),
        "{src}"
    );
    assert_eq!(src["instanceID"].as_str().map(str::len), Some(36));
    // Header values never reach the log.
    assert!(!s.log_text().contains("tok-123"));
}

#[tokio::test]
async fn nothing_is_lost_while_the_queue_has_room() {
    let rx = Receiver::start().await;
    rx.refuse();
    let s = server_with(&endpoint(&rx.url("/"), ""), None);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(publish(&s, &format!("repository=r/{i}")).await);
    }
    // Connection refused: retried.
    assert!(
        eventually(WAIT, || s
            .log_text()
            .contains("notification delivery failed"))
        .await
    );
    rx.reopen().await;
    assert!(rx.wait_for(20, WAIT).await, "got {}", rx.accepted().len());
    let got: Vec<String> = rx
        .accepted()
        .iter()
        .map(|r| r.events()[0]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids, "every event once, in order");
    assert!(sent(&s, 20).await);
    assert!(
        s.metric(
            "stevedore_notification_attempts_failed_total",
            &[("endpoint", "hook"), ("status", "error")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn server_errors_are_retried_until_they_succeed() {
    let rx = Receiver::start().await;
    rx.set_mode(Mode::Fail {
        status: 503,
        times: 3,
    });
    let s = server_with(&endpoint(&rx.url("/"), ""), None);
    let id = publish(&s, "action=delete&repository=a/b").await;
    assert!(rx.wait_for(1, WAIT).await);
    let all = rx.received();
    assert_eq!(all.len(), 4, "three 503s, then the 200");
    assert!(all.iter().all(|r| r.events()[0]["id"] == id.as_str()));
    assert_eq!(
        s.metric(
            "stevedore_notification_attempts_failed_total",
            &[("endpoint", "hook"), ("status", "503")]
        )
        .await,
        3.0
    );
}

#[tokio::test]
async fn a_rejected_event_is_dead_lettered_and_the_queue_moves_on() {
    let rx = Receiver::start().await;
    rx.set_mode(Mode::Fail {
        status: 400,
        times: 2,
    });
    let s = server_with(&endpoint(&rx.url("/"), "      maxattempts: 2\n"), None);
    let bad = publish(&s, "repository=a/bad").await;
    let good = publish(&s, "repository=a/good").await;
    assert!(rx.wait_for(1, WAIT).await);
    let accepted = rx.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].events()[0]["id"], good.as_str());
    let st = endpoint_status(&s).await;
    assert_eq!(st["deadLettered"], 1, "{st}");
    assert_eq!(st["deadLetters"][0]["eventId"], bad.as_str());
    assert_eq!(st["deadLetters"][0]["status"], 400);
    assert_eq!(st["lastFailures"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        s.metric(
            "stevedore_notification_events_dead_lettered_total",
            &[("endpoint", "hook")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rx = Receiver::start().await;
    rx.set_mode(Mode::RateLimited {
        retry_after_secs: 1,
        times: 1,
    });
    let s = server_with(&endpoint(&rx.url("/"), ""), None);
    publish(&s, "").await;
    assert!(rx.wait_for(1, WAIT).await);
    let all = rx.received();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].status, 429);
    let waited = all[1].at.duration_since(all[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?} despite Retry-After: 1 (backoff is 20ms)"
    );
}

#[tokio::test]
async fn a_stalled_receiver_holds_up_neither_publishing_nor_a_push() {
    let rx = Receiver::start().await;
    rx.set_mode(Mode::Stall);
    let s = server_with(&endpoint(&rx.url("/"), "      timeout: 60s\n"), None);
    publish(&s, "").await;
    assert!(
        rx.wait_for_requests(1, WAIT).await,
        "the first event is being sent"
    );
    // The receiver holds that request open; the registry goes on.
    for i in 0..30 {
        publish(&s, &format!("repository=r/{i}")).await;
    }
    // The push completes, and its own event waits in the queue behind the others.
    let digest = push_blob(&s.url(""), "team/app", b"pushed while the receiver stalls").await;
    let st = endpoint_status(&s).await;
    assert_eq!(st["queue"]["depth"], 32, "{st}");
    assert_eq!(st["state"], "sending");
    // Released, the stalled request is answered 503; the worker retries it, then the rest.
    rx.set_mode(Mode::Accept);
    assert!(rx.wait_for(32, WAIT).await, "got {}", rx.accepted().len());
    let last = rx.accepted().last().expect("last").events()[0].clone();
    assert_eq!(last["action"], "push");
    assert_eq!(last["target"]["repository"], "team/app");
    assert_eq!(last["target"]["digest"], digest.as_str());
}

#[tokio::test]
async fn a_full_queue_drops_by_its_policy_and_says_so() {
    let rx = Receiver::start().await;
    rx.refuse();
    let s = server_with(
        &endpoint(&rx.url("/"), "      queue:\n        size: 3\n"),
        None,
    );
    let mut ids = vec![publish(&s, "repository=r/0").await];
    // The first is taken for delivery (and retried) before the others come.
    assert!(status_until(&s, |st| !st["endpoints"][0]["inflight"].is_null()).await);
    for i in 1..8 {
        ids.push(publish(&s, &format!("repository=r/{i}")).await);
    }
    assert!(s.logged("notification queue full").await);
    rx.reopen().await;
    // In flight (the first, being retried) + the 3 newest waiting; the 4 oldest waiting dropped.
    assert!(rx.wait_for(4, WAIT).await);
    let got: Vec<String> = rx
        .accepted()
        .iter()
        .map(|r| r.events()[0]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got[0], ids[0]);
    assert_eq!(&got[1..], &ids[5..]);
    assert_eq!(
        s.metric(
            "stevedore_notification_events_dropped_total",
            &[("endpoint", "hook")]
        )
        .await,
        4.0
    );
}

#[tokio::test]
async fn a_persistent_queue_survives_kill_9() {
    let rx = Receiver::start().await;
    rx.refuse();
    let data = tempfile::tempdir().expect("tmp");
    let dir = data.path().join("data");
    let ep = endpoint(&rx.url("/"), "      queue:\n        persistent: true\n");
    let mut s = server_with(&ep, Some(dir.clone()));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(&s, &format!("repository=r/{i}")).await);
    }
    // Durable once written: wait for the spool to hold all five, then kill -9.
    assert!(
        status_until(&s, |st| st["endpoints"][0]["queue"]["persisted"] == 5).await,
        "{}",
        endpoint_status(&s).await
    );
    s.kill9();
    rx.reopen().await;
    let s = server_with(&ep, Some(dir));
    assert!(rx.wait_for(5, WAIT).await, "got {}", rx.accepted().len());
    let got: Vec<String> = rx
        .accepted()
        .iter()
        .map(|r| r.events()[0]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids);
    // Delivered entries leave the disk.
    assert!(
        eventually(WAIT, || {
            std::fs::read_dir(s.dir.join("notifications/hook"))
                .map(|d| d.filter_map(Result::ok).all(|e| e.file_name() == "dead"))
                .unwrap_or(false)
        })
        .await
    );
}

#[tokio::test]
async fn a_graceful_shutdown_flushes_the_queue() {
    let rx = Receiver::start().await;
    rx.refuse();
    let mut s = server_with(&endpoint(&rx.url("/"), ""), None);
    for i in 0..3 {
        publish(&s, &format!("repository=r/{i}")).await;
    }
    let _ = std::process::Command::new("kill")
        .arg(s.child.id().to_string())
        .status();
    assert!(s.logged("shutting down").await, "{}", s.log_text());
    rx.reopen().await;
    assert!(rx.wait_for(3, WAIT).await, "got {}", rx.accepted().len());
    s.stop();
}

#[tokio::test]
async fn signatures_verify_with_an_independent_implementation() {
    let rx = Receiver::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::write(&a, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").expect("a");
    std::fs::write(&b, "whsec_c2Vjb25kIHNlY3JldCBvZiBzb21lIGxlbmd0aA==").expect("b");
    let s = server_with(
        &endpoint(
            &rx.url("/"),
            &format!(
                "      signing:\n        secretfiles: [{}, {}]\n",
                a.display(),
                b.display()
            ),
        ),
        None,
    );
    let id = publish(&s, "").await;
    assert!(rx.wait_for(1, WAIT).await);
    let r = &rx.accepted()[0];
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
    let ts = r.header("webhook-timestamp").expect("timestamp");
    let sigs = r.header("webhook-signature").expect("signature");
    assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
    let body_file = tmp.path().join("body");
    std::fs::write(&body_file, &r.body).expect("body");
    // Python's hmac, as a receiver library would check it.
    let script = r#"
import base64, hashlib, hmac, sys
msg_id, ts, sigs, body_path = sys.argv[1:5]
body = open(body_path, 'rb').read()
given = {s.split(',', 1)[1] for s in sigs.split(' ')}
for secret in sys.argv[5:]:
    key = base64.b64decode(secret.removeprefix('whsec_'))
    mac = hmac.new(key, f'{msg_id}.{ts}.'.encode() + body, hashlib.sha256).digest()
    if base64.b64encode(mac).decode() not in given:
        sys.exit('no signature for ' + secret[:10])
print('ok')
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([&id, ts, sigs, body_file.to_str().unwrap()])
        .arg("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .arg("whsec_c2Vjb25kIHNlY3JldCBvZiBzb21lIGxlbmd0aA==")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong key does not verify (the check can fail).
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([&id, ts, sigs, body_file.to_str().unwrap()])
        .arg("whsec_d3Jvbmcgc2VjcmV0IGZvciB0aGUgdGVzdA==")
        .output()
        .expect("python3");
    assert!(!out.status.success());
}

#[tokio::test]
async fn formats_and_filters_per_endpoint() {
    let (v2, ce, ui) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let s = server_with(
        &format!(
            "    - name: v2\n      url: {}\n      format: distribution-v2\n      actions: [push]\n\
             \x20   - name: ce\n      url: {}\n      format: cloudevents\n      cacheevents: true\n      repositories: [\"team/**\"]\n\
             \x20   - name: ui\n      url: {}\n      ignore:\n        actions: [pull]\n",
            v2.url("/"),
            ce.url("/"),
            ui.url("/")
        ),
        None,
    );
    publish(&s, "action=pull&repository=team/a").await;
    publish(&s, "action=cache.fill&repository=team/a").await;
    publish(&s, "action=push&repository=other/b").await;
    publish(&s, "action=push&repository=team/c&tag=t").await;
    assert!(v2.wait_for(2, WAIT).await);
    assert!(ce.wait_for(3, WAIT).await);
    assert!(ui.wait_for(2, WAIT).await);
    let actions = |rx: &Receiver, f: &dyn Fn(&crate::common::receiver::Received) -> String| {
        rx.accepted().iter().map(f).collect::<Vec<_>>()
    };
    let envelope_action = |r: &crate::common::receiver::Received| {
        r.events()[0]["action"].as_str().unwrap().to_string()
    };
    assert_eq!(actions(&v2, &envelope_action), ["push", "push"]);
    assert_eq!(
        v2.accepted()[0].header("content-type"),
        Some("application/vnd.docker.distribution.events.v2+json")
    );
    assert_eq!(actions(&ui, &envelope_action), ["push", "push"]);
    let ce_type = |r: &crate::common::receiver::Received| r.header("ce-type").unwrap().to_string();
    assert_eq!(
        actions(&ce, &ce_type),
        [
            "io.stevedore.registry.pull",
            "io.stevedore.registry.cache.fill",
            "io.stevedore.registry.push"
        ]
    );
    let last = &ce.accepted()[2];
    assert_eq!(last.header("ce-specversion"), Some("1.0"));
    assert_eq!(last.header("ce-subject"), Some("team/c:t"));
    assert_eq!(last.header("content-type"), Some("application/json"));
    assert_eq!(last.json()["target"]["repository"], "team/c");
    // Nothing else arrives: every queue drains with these counts.
    let drained = |st: &serde_json::Value| {
        st["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["queue"]["depth"] == 0))
    };
    assert!(status_until(&s, drained).await);
    assert_eq!(v2.received().len(), 2);
    assert_eq!(ui.received().len(), 2);
}
