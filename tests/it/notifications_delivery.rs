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
    format!("    - name: hook\n      url: {url}\n      backoff: 20ms\n{extra}")
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
    assert_eq!(
        s.metric(
            "stevedore_notification_events_sent_total",
            &[("endpoint", "hook")]
        )
        .await,
        20.0
    );
    assert!(
        s.metric(
            "stevedore_notification_attempts_failed_total",
            &[("endpoint", "hook"), ("status", "error")]
        )
        .await
            >= 1.0
    );
}
