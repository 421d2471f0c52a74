//! Golden renderings of a fixed event: what distribution 2.8 (`registry:2`) and 3.x put on
//! the wire for it (Go's `json.MarshalIndent(envelope, "", "   ")`), and CloudEvents.

use super::*;
use crate::notify::event::{Action, Actor, Descriptor, Event, RequestInfo, Source, Target};
use crate::oci::Digest;
use std::time::Duration;

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).expect("digest")
}

/// A manifest push, as distribution's bridge builds it.
fn push() -> Event {
    let d = digest('a');
    Event {
        id: "ev-1".into(),
        timestamp: UNIX_EPOCH + Duration::new(1_796_220_556, 123_456_700),
        action: Action::Push,
        target: Target {
            descriptor: Descriptor {
                media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
                size: 528,
                digest: Some(d.clone()),
                ..Descriptor::default()
            },
            length: 528,
            repository: "team/app".into(),
            from_repository: None,
            url: Some(format!("http://reg:5000/v2/team/app/manifests/{d}")),
            tag: Some("latest".into()),
            references: vec![Descriptor {
                media_type: "application/vnd.docker.container.image.v1+json".into(),
                size: 1470,
                digest: Some(digest('b')),
                ..Descriptor::default()
            }],
            upstream: None,
            reason: None,
        },
        request: RequestInfo {
            id: "req-1".into(),
            addr: "10.0.0.9:51234".into(),
            host: "reg:5000".into(),
            method: "PUT".into(),
            useragent: "docker/27.0 <go> & more".into(),
        },
        actor: Actor {
            name: Some("alice".into()),
        },
        source: Source {
            addr: "reg-1:5000".into(),
            instance_id: "inst-1".into(),
        },
    }
}

const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The end of the push's envelope after `target`: the same in v1 and v2.
const PUSH_TAIL: &str = r#"         "request": {
            "id": "req-1",
            "addr": "10.0.0.9:51234",
            "host": "reg:5000",
            "method": "PUT",
            "useragent": "docker/27.0 \u003cgo\u003e \u0026 more"
         },
         "actor": {
            "name": "alice"
         },
         "source": {
            "addr": "reg-1:5000",
            "instanceID": "inst-1"
         }
      }
   ]
}"#;

fn text(r: &Rendered) -> &str {
    std::str::from_utf8(&r.body).expect("utf-8")
}

#[test]
fn v1_envelope_is_byte_for_byte_registry_2s() {
    let r = render(&push(), NotifyFormat::DistributionV1, true);
    assert_eq!(
        r.content_type,
        "application/vnd.docker.distribution.events.v1+json"
    );
    assert!(r.headers.is_empty());
    let want = format!(
        r#"{{
   "events": [
      {{
         "id": "ev-1",
         "timestamp": "2026-12-02T14:09:16.1234567Z",
         "action": "push",
         "target": {{
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 528,
            "digest": "{A}",
            "length": 528,
            "repository": "team/app",
            "url": "http://reg:5000/v2/team/app/manifests/{A}",
            "tag": "latest",
            "references": [
               {{
                  "mediaType": "application/vnd.docker.container.image.v1+json",
                  "size": 1470,
                  "digest": "{B}"
               }}
            ]
         }},
{PUSH_TAIL}"#
    );
    assert_eq!(text(&r), want);
}

#[test]
fn v1_omits_what_go_omits_and_keeps_what_it_keeps() {
    // An anonymous blob pull with no request details: `actor` is `{}`, `request` keeps
    // `id`, `method` and `useragent` even empty, empty target fields go.
    let mut e = push();
    e.action = Action::Pull;
    e.target.tag = None;
    e.target.url = None;
    e.target.references.clear();
    e.target.descriptor.media_type = String::new();
    e.request = RequestInfo::default();
    e.actor = Actor::default();
    e.source = Source::default();
    e.timestamp = UNIX_EPOCH + Duration::from_secs(1_796_220_556);
    let r = render(&e, NotifyFormat::DistributionV1, true);
    let want = format!(
        r#"{{
   "events": [
      {{
         "id": "ev-1",
         "timestamp": "2026-12-02T14:09:16Z",
         "action": "pull",
         "target": {{
            "size": 528,
            "digest": "{A}",
            "length": 528,
            "repository": "team/app"
         }},
         "request": {{
            "id": "",
            "method": "",
            "useragent": ""
         }},
         "actor": {{}},
         "source": {{}}
      }}
   ]
}}"#
    );
    assert_eq!(text(&r), want);
}

#[test]
fn references_only_when_included() {
    let r = render(&push(), NotifyFormat::DistributionV1, false);
    assert!(!text(&r).contains("references"));
}

#[test]
fn v2_envelope_is_distribution_3s() {
    let r = render(&push(), NotifyFormat::DistributionV2, true);
    assert_eq!(
        r.content_type,
        "application/vnd.docker.distribution.events.v2+json"
    );
    let want = format!(
        r#"{{
   "events": [
      {{
         "id": "ev-1",
         "timestamp": "2026-12-02T14:09:16.1234567Z",
         "action": "push",
         "target": {{
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": "{A}",
            "size": 528,
            "length": 528,
            "repository": "team/app",
            "url": "http://reg:5000/v2/team/app/manifests/{A}",
            "tag": "latest",
            "references": [
               {{
                  "mediaType": "application/vnd.docker.container.image.v1+json",
                  "digest": "{B}",
                  "size": 1470
               }}
            ]
         }},
{PUSH_TAIL}"#
    );
    assert_eq!(text(&r), want);
}

#[test]
fn cloudevents_binary_mode() {
    let r = render(&push(), NotifyFormat::CloudEvents, false);
    assert_eq!(r.content_type, "application/json");
    let h: std::collections::BTreeMap<&str, &str> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(h["ce-specversion"], "1.0");
    assert_eq!(h["ce-type"], "io.stevedore.registry.push");
    assert_eq!(h["ce-source"], "//reg-1:5000");
    assert_eq!(h["ce-id"], "ev-1");
    assert_eq!(h["ce-time"], "2026-12-02T14:09:16.1234567Z");
    assert_eq!(h["ce-subject"], "team/app:latest");
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(body["id"], "ev-1");
    assert_eq!(body["target"]["repository"], "team/app");
    assert!(
        body.get("events").is_none(),
        "the event itself, no envelope"
    );
}

#[test]
fn cache_events_name_their_upstream() {
    let mut e = push();
    e.action = Action::CacheFill;
    e.target.upstream = Some("docker.io".into());
    let v: serde_json::Value =
        serde_json::from_slice(&render(&e, NotifyFormat::DistributionV1, false).body)
            .expect("json");
    assert_eq!(v["events"][0]["action"], "cache.fill");
    assert_eq!(v["events"][0]["target"]["upstream"], "docker.io");
}

#[test]
fn timestamps_are_go_rfc3339_nano_in_utc() {
    let t = |s, n| rfc3339_nano(UNIX_EPOCH + Duration::new(s, n));
    assert_eq!(t(0, 0), "1970-01-01T00:00:00Z");
    assert_eq!(t(951_782_400, 1), "2000-02-29T00:00:00.000000001Z");
    assert_eq!(t(1_796_220_556, 500_000_000), "2026-12-02T14:09:16.5Z");
    assert_eq!(
        t(4_102_444_799, 999_999_999),
        "2099-12-31T23:59:59.999999999Z"
    );
}
