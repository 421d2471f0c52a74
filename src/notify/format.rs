//! Wire formats: an [`Event`] rendered as the request an endpoint receives (content type,
//! format headers, body). distribution 2.x's v1 envelope (`registry:2`), distribution 3.x's v2
//! envelope, and CloudEvents 1.0 in binary mode.
//!
//! Owns field names, order and omission (those of distribution's `notifications/event.go`,
//! encoded as Go's `json.MarshalIndent(envelope, "", "   ")` does: three-space indent, HTML
//! characters escaped) and the timestamp format (Go's `RFC3339Nano` in UTC). Does no I/O.

use super::event::{Descriptor, Event};
use crate::config::NotifyFormat;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// distribution 2.x's envelope media type.
pub const V1_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// distribution 3.x's envelope media type.
pub const V2_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v2+json";
/// CloudEvents `ce-type` prefix: `io.stevedore.registry.push`, ….
pub const CLOUDEVENTS_TYPE_PREFIX: &str = "io.stevedore.registry.";

/// One event as the request body and headers a format gives it. Signing and the endpoint's
/// own headers are added when it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub content_type: String,
    /// Headers the format itself needs (CloudEvents' `ce-*`).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Renders `event` in `format`; `references` says whether `target.references` is sent
/// (`notifications.events.includereferences`).
pub fn render(event: &Event, format: NotifyFormat, references: bool) -> Rendered {
    match format {
        NotifyFormat::DistributionV1 => Rendered {
            content_type: V1_MEDIA_TYPE.into(),
            headers: Vec::new(),
            body: envelope(&V1Record::new(event, references)),
        },
        NotifyFormat::DistributionV2 => Rendered {
            content_type: V2_MEDIA_TYPE.into(),
            headers: Vec::new(),
            body: envelope(&V2Record::new(event, references)),
        },
        NotifyFormat::CloudEvents => cloudevent(event, references),
    }
}

/// `{"events":[record]}` as Go's `MarshalIndent(…, "", "   ")` writes it.
fn envelope<T: Serialize>(record: &T) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        events: [&'a T; 1],
    }
    go_json(&Envelope { events: [record] })
}

/// JSON with Go's three-space indent and its escapes of `<`, `>`, `&`, U+2028 and U+2029
/// (characters that, outside strings, JSON never has; so replacing them everywhere is safe).
fn go_json<T: Serialize>(value: &T) -> Bytes {
    let mut out = Vec::with_capacity(1024);
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    value
        .serialize(&mut ser)
        .expect("serializing an event to memory cannot fail");
    let text = String::from_utf8(out).expect("serde_json writes UTF-8");
    if !text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return Bytes::from(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    Bytes::from(escaped)
}

/// CloudEvents 1.0 binary mode: the attributes as `ce-*` headers, the v1 event record
/// (not wrapped in an envelope) as the `application/json` body.
fn cloudevent(event: &Event, references: bool) -> Rendered {
    let t = &event.target;
    let mut subject = t.repository.clone();
    if let Some(tag) = &t.tag {
        subject = format!("{subject}:{tag}");
    } else if let Some(d) = &t.descriptor.digest {
        subject = format!("{subject}@{d}");
    }
    let mut headers = vec![
        ("ce-specversion".to_string(), "1.0".to_string()),
        (
            "ce-type".to_string(),
            format!("{CLOUDEVENTS_TYPE_PREFIX}{}", event.action.as_str()),
        ),
        (
            "ce-source".to_string(),
            format!("//{}", event.source.addr.trim_start_matches('/')),
        ),
        ("ce-id".to_string(), event.id.clone()),
        ("ce-time".to_string(), rfc3339_nano(event.timestamp)),
    ];
    if !subject.is_empty() {
        headers.push(("ce-subject".to_string(), subject));
    }
    Rendered {
        content_type: "application/json".into(),
        headers,
        body: go_json(&V1Record::new(event, references)),
    }
}

/// A timestamp as Go's `time.RFC3339Nano` writes a UTC time: `2006-01-02T15:04:05.999999999Z`,
/// trailing zeros of the fraction dropped (and the dot with them).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = crate::clock::civil_from_days(days as i64);
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// distribution 2.x's `distribution.Descriptor` (every field `omitempty`).
#[derive(Serialize)]
struct V1Descriptor<'a> {
    #[serde(rename = "mediaType", skip_serializing_if = "str::is_empty")]
    media_type: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    digest: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    urls: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

impl<'a> V1Descriptor<'a> {
    fn new(d: &'a Descriptor) -> Self {
        V1Descriptor {
            media_type: &d.media_type,
            size: d.size,
            digest: d.digest.as_ref().map(|d| d.as_str()).unwrap_or(""),
            urls: &d.urls,
            annotations: &d.annotations,
        }
    }
}

/// The OCI `v1.Descriptor` of distribution 3.x: `mediaType`, `digest` and `size` always.
#[derive(Serialize)]
struct V2Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    urls: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

impl<'a> V2Descriptor<'a> {
    fn new(d: &'a Descriptor) -> Self {
        V2Descriptor {
            media_type: &d.media_type,
            digest: d.digest.as_ref().map(|d| d.as_str()).unwrap_or(""),
            size: d.size,
            urls: &d.urls,
            annotations: &d.annotations,
        }
    }
}

/// `target` after its embedded descriptor: the same in both versions.
#[derive(Serialize)]
struct TargetRest<'a, D> {
    #[serde(skip_serializing_if = "is_zero")]
    length: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    repository: &'a str,
    #[serde(rename = "fromRepository", skip_serializing_if = "str::is_empty")]
    from_repository: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    url: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    tag: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    references: Vec<D>,
    /// stevedore's cache events: the upstream concerned (not a distribution field).
    #[serde(skip_serializing_if = "str::is_empty")]
    upstream: &'a str,
    /// stevedore's cache events: why (not a distribution field).
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
}

#[derive(Serialize)]
struct Target<'a, D> {
    #[serde(flatten)]
    descriptor: D,
    #[serde(flatten)]
    rest: TargetRest<'a, D>,
}

impl<'a, D> Target<'a, D> {
    fn new(event: &'a Event, references: bool, desc: fn(&'a Descriptor) -> D) -> Self {
        let t = &event.target;
        let s = |o: &'a Option<String>| o.as_deref().unwrap_or("");
        Target {
            descriptor: desc(&t.descriptor),
            rest: TargetRest {
                length: t.length,
                repository: &t.repository,
                from_repository: s(&t.from_repository),
                url: s(&t.url),
                tag: s(&t.tag),
                references: if references {
                    t.references.iter().map(desc).collect()
                } else {
                    Vec::new()
                },
                upstream: s(&t.upstream),
                reason: s(&t.reason),
            },
        }
    }
}

/// `request`: `id`, `method` and `useragent` are always sent.
#[derive(Serialize)]
struct Request<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    addr: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    host: &'a str,
    method: &'a str,
    useragent: &'a str,
}

#[derive(Serialize)]
struct Actor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct Source<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    addr: &'a str,
    #[serde(rename = "instanceID", skip_serializing_if = "str::is_empty")]
    instance_id: &'a str,
}

/// One event as distribution's `Event` struct marshals (v1 and v2 differ only in the
/// descriptor embedded in `target`).
#[derive(Serialize)]
struct Record<'a, D> {
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    timestamp: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    action: &'a str,
    target: Target<'a, D>,
    request: Request<'a>,
    actor: Actor<'a>,
    source: Source<'a>,
}

type V1Record<'a> = Record<'a, V1Descriptor<'a>>;
type V2Record<'a> = Record<'a, V2Descriptor<'a>>;

impl<'a, D> Record<'a, D> {
    fn build(event: &'a Event, references: bool, desc: fn(&'a Descriptor) -> D) -> Self {
        let r = &event.request;
        Record {
            id: &event.id,
            timestamp: rfc3339_nano(event.timestamp),
            action: event.action.as_str(),
            target: Target::new(event, references, desc),
            request: Request {
                id: &r.id,
                addr: &r.addr,
                host: &r.host,
                method: &r.method,
                useragent: &r.useragent,
            },
            actor: Actor {
                name: event.actor.name.as_deref().filter(|n| !n.is_empty()),
            },
            source: Source {
                addr: &event.source.addr,
                instance_id: &event.source.instance_id,
            },
        }
    }
}

impl<'a> V1Record<'a> {
    fn new(event: &'a Event, references: bool) -> Self {
        Record::build(event, references, V1Descriptor::new)
    }
}

impl<'a> V2Record<'a> {
    fn new(event: &'a Event, references: bool) -> Self {
        Record::build(event, references, V2Descriptor::new)
    }
}

#[cfg(test)]
mod tests;
