//! [`Config::validate`]: checks of values and of combinations of keys that
//! the types alone do not enforce. Every error names its key(s). Nothing here
//! touches the filesystem or the network.

use std::collections::BTreeSet;

use super::units;
use super::{Config, ConfigError, Secret};

pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    if c.version != "0.1" {
        return Err(ConfigError::value(
            "version",
            format!("{:?}", c.version),
            "the only configuration version is \"0.1\"",
        ));
    }
    storage(c)?;
    http(c)?;
    auth(c)?;
    ui(c)?;
    proxy(c)?;
    notifications(c)
}

/// The actions an endpoint's `actions` and `ignore.actions` may name.
const NOTIFY_ACTIONS: &[&str] = &[
    "push",
    "pull",
    "delete",
    "mount",
    "cache.fill",
    "cache.evict",
    "upstream.error",
    "upstream.ratelimited",
    "stale.served",
];

fn notifications(c: &Config) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (i, e) in c.notifications.endpoints.iter().enumerate() {
        let key = |k: &str| format!("notifications.endpoints[{i}].{k}");
        if e.name.trim().is_empty() {
            return Err(ConfigError::missing(
                key("name"),
                "every endpoint needs a name",
            ));
        }
        if !names.insert(e.name.as_str()) {
            return Err(ConfigError::value(
                key("name"),
                format!("{:?}", e.name),
                "another endpoint has this name",
            ));
        }
        if e.queue.persistent
            && (e.name.starts_with('.')
                || !e
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)))
        {
            return Err(ConfigError::value(
                key("name"),
                format!("{:?}", e.name),
                "a persistent queue is kept in a directory of this name: use letters, digits, \".\", \"_\" and \"-\", not starting with \".\"",
            ));
        }
        if e.disabled {
            continue;
        }
        let lower = e.url.trim().to_ascii_lowercase();
        let rest = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/'))
            || e.url
                .trim()
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            // The URL may hold a token: not echoed.
            return Err(ConfigError::invalid(
                key("url"),
                "must be an http:// or https:// URL with a host and no spaces",
            ));
        }
        for (name, values) in &e.headers {
            units::check_header_name(name)
                .map_err(|r| ConfigError::invalid(key(&format!("headers.{name}")), r))?;
            if values
                .iter()
                .any(|v| v.expose().chars().any(|ch| ch.is_control() && ch != '\t'))
            {
                return Err(ConfigError::invalid(
                    key(&format!("headers.{name}")),
                    "header values must not contain control characters",
                ));
            }
        }
        if e.queue.size == 0 {
            return Err(ConfigError::invalid(
                key("queue.size"),
                "must be at least 1",
            ));
        }
        if e.maxattempts == 0 {
            return Err(ConfigError::invalid(
                key("maxattempts"),
                "must be at least 1",
            ));
        }
        for (list, k) in [
            (&e.actions, "actions"),
            (&e.ignore.actions, "ignore.actions"),
        ] {
            for (j, a) in list.iter().enumerate() {
                if !NOTIFY_ACTIONS.contains(&a.as_str()) {
                    return Err(ConfigError::value(
                        key(&format!("{k}[{j}]")),
                        format!("{a:?}"),
                        format!("expected one of {}", NOTIFY_ACTIONS.join(", ")),
                    ));
                }
            }
        }
        globs(&key("repositories"), &e.repositories)?;
    }
    Ok(())
}

fn ui(c: &Config) -> Result<(), ConfigError> {
    if c.ui.enabled && c.ui.listener == super::UiListener::Debug && c.http.debug.addr.is_none() {
        return Err(ConfigError::invalid(
            "ui.listener",
            "is debug, but http.debug.addr is not set",
        ));
    }
    if c.ui.sessionttl.is_zero() {
        return Err(ConfigError::invalid(
            "ui.sessionttl",
            "must be greater than zero",
        ));
    }
    Ok(())
}

fn s3(s3: &super::S3Config) -> Result<(), ConfigError> {
    for (key, value) in [
        ("storage.s3.region", &s3.region),
        ("storage.s3.bucket", &s3.bucket),
    ] {
        if value.trim().is_empty() {
            return Err(ConfigError::missing(key, "storage.s3 is configured"));
        }
    }
    if s3.cachedirectory.as_os_str().is_empty() {
        return Err(ConfigError::invalid(
            "storage.s3.cachedirectory",
            "must not be empty",
        ));
    }
    if !s3.v4auth {
        return Err(ConfigError::invalid(
            "storage.s3.v4auth",
            "only signature version 4 is supported: remove the key or set it to true",
        ));
    }
    if !(super::S3_MIN_CHUNK_SIZE..=super::S3_MAX_CHUNK_SIZE).contains(&s3.chunksize) {
        return Err(ConfigError::value(
            "storage.s3.chunksize",
            s3.chunksize.to_string(),
            "must be between 5MiB and 5GiB (S3's part sizes)",
        ));
    }
    if s3.skipverify {
        return Err(ConfigError::invalid(
            "storage.s3.skipverify",
            "is not supported: add the endpoint's CA to the system's trust store (SSL_CERT_FILE)",
        ));
    }
    if s3.objectacl != "private" {
        return Err(ConfigError::value(
            "storage.s3.objectacl",
            format!("{:?}", s3.objectacl),
            "only \"private\" is supported (grant access with a bucket policy)",
        ));
    }
    if s3.keyid.is_some() && !s3.encrypt {
        return Err(ConfigError::invalid(
            "storage.s3.keyid",
            "has no effect unless storage.s3.encrypt is true",
        ));
    }
    if let Some(e) = &s3.regionendpoint
        && e.contains("://")
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(ConfigError::value(
            "storage.s3.regionendpoint",
            format!("{e:?}"),
            "expected an http:// or https:// URL, or a host[:port]",
        ));
    }
    Ok(())
}

fn storage(c: &Config) -> Result<(), ConfigError> {
    let s = &c.storage;
    if s.filesystem.rootdirectory.as_os_str().is_empty() {
        return Err(ConfigError::invalid(
            "storage.filesystem.rootdirectory",
            "must not be empty",
        ));
    }
    if let Some(s3) = &s.s3 {
        self::s3(s3)?;
    }
    let up = &s.maintenance.uploadpurging;
    if up.enabled && up.interval.is_zero() {
        return Err(ConfigError::invalid(
            "storage.maintenance.uploadpurging.interval",
            "must be greater than zero while upload purging is enabled",
        ));
    }
    match s.cache.blobdescriptor.as_str() {
        "inmemory" => {}
        "redis" => match &c.redis {
            Some(r) if !r.addr.trim().is_empty() => {}
            _ => {
                return Err(ConfigError::missing(
                    "redis.addr",
                    "storage.cache.blobdescriptor is \"redis\"",
                ));
            }
        },
        other => {
            return Err(ConfigError::value(
                "storage.cache.blobdescriptor",
                format!("{other:?}"),
                "expected \"inmemory\" or \"redis\"",
            ));
        }
    }
    if let Some(r) = &c.redis {
        if !r.addr.trim().is_empty() {
            units::parse_host_port(&r.addr)
                .map_err(|why| ConfigError::value("redis.addr", format!("{:?}", r.addr), why))?;
        }
        let t = &r.tls;
        match (&t.certificate, &t.key) {
            (Some(_), None) => {
                return Err(ConfigError::missing(
                    "redis.tls.key",
                    "redis.tls.certificate is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::missing(
                    "redis.tls.certificate",
                    "redis.tls.key is set",
                ));
            }
            _ => {}
        }
        if !t.enabled && (t.certificate.is_some() || !t.clientcas.is_empty()) {
            return Err(ConfigError::conflict(
                "redis.tls.certificate",
                "redis.tls.enabled",
                "TLS settings for Redis need redis.tls.enabled: true",
            ));
        }
        for (key, d) in [
            ("redis.dialtimeout", r.dialtimeout),
            ("redis.readtimeout", r.readtimeout),
            ("redis.writetimeout", r.writetimeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
    }
    if s.cache.blobdescriptorsize == 0 {
        return Err(ConfigError::invalid(
            "storage.cache.blobdescriptorsize",
            "must be greater than zero",
        ));
    }
    Ok(())
}

fn http(c: &Config) -> Result<(), ConfigError> {
    let h = &c.http;
    match h.net.as_str() {
        // Empty: distribution's default, tcp.
        "tcp" | "" => {}
        "unix" => {
            return Err(ConfigError::Unsupported {
                key: "http.net".into(),
                hint: "only \"tcp\" is available".into(),
            });
        }
        other => {
            return Err(ConfigError::value(
                "http.net",
                format!("{other:?}"),
                "expected \"tcp\"",
            ));
        }
    }
    if !h.prefix.is_empty() && h.prefix != "/" {
        return Err(ConfigError::Unsupported {
            key: "http.prefix".into(),
            hint: format!(
                "stevedore serves /v2/ at the root; {:?} cannot be honoured",
                h.prefix
            ),
        });
    }
    if let Some(host) = &h.host {
        units::parse_http_url(host)
            .map_err(|r| ConfigError::value("http.host", format!("{host:?}"), r))?;
    }
    for (name, values) in &h.headers {
        units::check_header_name(name)
            .map_err(|r| ConfigError::invalid(format!("http.headers.{name}"), r))?;
        if values
            .iter()
            .any(|v| v.chars().any(|ch| ch.is_control() && ch != '\t'))
        {
            return Err(ConfigError::invalid(
                format!("http.headers.{name}"),
                "header values must not contain control characters",
            ));
        }
    }
    let prom = &h.debug.prometheus;
    if !prom.path.starts_with('/') {
        return Err(ConfigError::value(
            "http.debug.prometheus.path",
            format!("{:?}", prom.path),
            "must start with \"/\"",
        ));
    }
    if prom.enabled && h.debug.addr.is_none() {
        return Err(ConfigError::conflict(
            "http.debug.prometheus.enabled",
            "http.debug.addr",
            "metrics are served on the debug listener: set http.debug.addr (e.g. \":5001\")",
        ));
    }
    if h.debug.addr == Some(h.addr) && h.addr.port() != 0 {
        return Err(ConfigError::conflict(
            "http.debug.addr",
            "http.addr",
            "the debug listener needs its own address",
        ));
    }
    let l = &h.limits;
    for (key, d) in [
        ("http.limits.headertimeout", l.headertimeout),
        ("http.limits.bodytimeout", l.bodytimeout),
    ] {
        if d.is_zero() {
            return Err(ConfigError::invalid(key, "must be greater than zero"));
        }
    }
    if !(8 * 1024..=1024 * 1024).contains(&l.maxheaderbytes) {
        return Err(ConfigError::value(
            "http.limits.maxheaderbytes",
            l.maxheaderbytes.to_string(),
            "must be between 8KiB and 1MiB",
        ));
    }
    for (key, n) in [
        ("http.limits.maxheaders", l.maxheaders),
        ("http.limits.maxstreams", l.maxstreams),
    ] {
        if n == 0 || n > 100_000 {
            return Err(ConfigError::value(
                key,
                n.to_string(),
                "must be between 1 and 100000",
            ));
        }
    }
    if let Some(tls) = &h.tls {
        if tls.certificate.as_os_str().is_empty() {
            return Err(ConfigError::missing(
                "http.tls.certificate",
                "http.tls needs both a certificate and a key",
            ));
        }
        if tls.key.as_os_str().is_empty() {
            return Err(ConfigError::missing(
                "http.tls.key",
                "http.tls needs both a certificate and a key",
            ));
        }
        match tls.minimumtls.as_deref() {
            None | Some("tls1.2") | Some("tls1.3") => {}
            Some(v @ ("tls1.0" | "tls1.1")) => {
                return Err(ConfigError::value(
                    "http.tls.minimumtls",
                    format!("{v:?}"),
                    "TLS versions below 1.2 are not supported; use \"tls1.2\" or \"tls1.3\"",
                ));
            }
            Some(v) => {
                return Err(ConfigError::value(
                    "http.tls.minimumtls",
                    format!("{v:?}"),
                    "expected \"tls1.2\" or \"tls1.3\"",
                ));
            }
        }
    }
    Ok(())
}

fn auth(c: &Config) -> Result<(), ConfigError> {
    let a = &c.auth;
    let policy_set = a.policy.anonymouspull || !a.policy.rules.is_empty();
    if policy_set && a.htpasswd.is_none() && a.token.is_none() && a.builtin.is_none() {
        return Err(ConfigError::invalid(
            "auth.policy",
            "an access policy needs auth.htpasswd, auth.token or auth.builtin to know who is asking",
        ));
    }
    for (i, rule) in a.policy.rules.iter().enumerate() {
        if rule.repository.trim().is_empty() {
            return Err(ConfigError::missing(
                format!("auth.policy.rules[{i}].repository"),
                "each auth.policy.rules entry needs a repository glob",
            ));
        }
    }
    let kinds = [
        ("auth.htpasswd", a.htpasswd.is_some()),
        ("auth.token", a.token.is_some()),
        ("auth.builtin", a.builtin.is_some()),
    ];
    let mut set = kinds.iter().filter(|(_, on)| *on).map(|(k, _)| *k);
    if let (Some(first), Some(second)) = (set.next(), set.next()) {
        return Err(ConfigError::conflict(
            first,
            second,
            "configure only one kind of authentication",
        ));
    }
    if let Some(b) = &a.builtin {
        builtin(b)?;
    }
    if let Some(h) = &a.htpasswd {
        let why = "auth.htpasswd needs a realm and a path";
        if h.realm.trim().is_empty() {
            return Err(ConfigError::missing("auth.htpasswd.realm", why));
        }
        if h.path.as_os_str().is_empty() {
            return Err(ConfigError::missing("auth.htpasswd.path", why));
        }
    }
    if let Some(t) = &a.token {
        let why = "auth.token needs realm, service, issuer and rootcertbundle";
        for (key, empty) in [
            ("auth.token.realm", t.realm.trim().is_empty()),
            ("auth.token.service", t.service.trim().is_empty()),
            ("auth.token.issuer", t.issuer.trim().is_empty()),
            (
                "auth.token.rootcertbundle",
                t.rootcertbundle.as_os_str().is_empty(),
            ),
        ] {
            if empty {
                return Err(ConfigError::missing(key, why));
            }
        }
        units::parse_http_url(&t.realm)
            .map_err(|r| ConfigError::value("auth.token.realm", format!("{:?}", t.realm), r))?;
    }
    Ok(())
}

fn builtin(b: &super::BuiltinAuth) -> Result<(), ConfigError> {
    if !b.realm.is_empty() {
        units::parse_http_url(&b.realm)
            .map_err(|r| ConfigError::value("auth.builtin.realm", format!("{:?}", b.realm), r))?;
    }
    for (key, value) in [
        ("auth.builtin.service", &b.service),
        ("auth.builtin.issuer", &b.issuer),
        ("auth.builtin.firstadmin.username", &b.firstadmin.username),
    ] {
        if value.trim().is_empty() {
            return Err(ConfigError::invalid(key, "must not be empty"));
        }
    }
    if b.expiration.as_secs() < 10 {
        return Err(ConfigError::invalid(
            "auth.builtin.expiration",
            "tokens must live at least 10s",
        ));
    }
    if b.firstadmin.password.is_some() && b.firstadmin.passwordfile.is_some() {
        return Err(ConfigError::conflict(
            "auth.builtin.firstadmin.password",
            "auth.builtin.firstadmin.passwordfile",
            "give the first admin's password one way",
        ));
    }
    Ok(())
}

fn proxy(c: &Config) -> Result<(), ConfigError> {
    let p = &c.proxy;
    if let Some(url) = &p.remoteurl {
        check_url("proxy.remoteurl", url)?;
    }
    credentials("proxy", &p.username, &p.password)?;
    if p.timeout.is_zero() {
        return Err(ConfigError::invalid(
            "proxy.timeout",
            "must be greater than zero",
        ));
    }
    if p.stalltimeout.is_zero() {
        return Err(ConfigError::invalid(
            "proxy.stalltimeout",
            "must be greater than zero",
        ));
    }
    for (key, d) in [
        ("proxy.connecttimeout", p.connecttimeout),
        ("proxy.breakermaxbackoff", p.breakermaxbackoff),
    ] {
        if d.is_zero() {
            return Err(ConfigError::invalid(key, "must be greater than zero"));
        }
    }
    if p.maxfetches == 0 || p.maxfetches > 4096 {
        return Err(ConfigError::invalid(
            "proxy.maxfetches",
            "must be between 1 and 4096",
        ));
    }
    if p.maxsize == Some(0) {
        return Err(ConfigError::invalid(
            "proxy.maxsize",
            "must be greater than zero (leave it out for no bound)",
        ));
    }
    if p.cafile.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
        return Err(ConfigError::invalid("proxy.cafile", "must not be empty"));
    }
    let mut local = BTreeSet::new();
    for (i, prefix) in p.localprefixes.iter().enumerate() {
        let key = format!("proxy.localprefixes[{i}]");
        units::check_repo_prefix(prefix)
            .map_err(|r| ConfigError::value(&key, format!("{prefix:?}"), r))?;
        if !local.insert(prefix.as_str()) {
            return Err(ConfigError::invalid(
                key,
                format!("{prefix:?} is listed twice"),
            ));
        }
    }
    globs("proxy.allow", &p.allow)?;
    globs("proxy.deny", &p.deny)?;
    pins(&p.pin)?;
    let mut names = BTreeSet::new();
    let mut prefixes = BTreeSet::new();
    for (i, u) in p.upstreams.iter().enumerate() {
        let at = format!("proxy.upstreams[{i}]");
        let why = "each proxy.upstreams entry needs a name and a remoteurl";
        if u.name.trim().is_empty() {
            return Err(ConfigError::missing(format!("{at}.name"), why));
        }
        if u.remoteurl.is_empty() {
            return Err(ConfigError::missing(format!("{at}.remoteurl"), why));
        }
        if !names.insert(u.name.to_ascii_lowercase()) {
            return Err(ConfigError::invalid(
                format!("{at}.name"),
                format!("another upstream is already named {:?}", u.name),
            ));
        }
        check_url(&format!("{at}.remoteurl"), &u.remoteurl)?;
        credentials(&at, &u.username, &u.password)?;
        globs(&format!("{at}.allow"), &u.allow)?;
        globs(&format!("{at}.deny"), &u.deny)?;
        if let Some(prefix) = &u.prefix {
            let key = format!("{at}.prefix");
            units::check_repo_prefix(prefix)
                .map_err(|r| ConfigError::value(&key, format!("{prefix:?}"), r))?;
            if !prefixes.insert(prefix.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("another upstream already uses the prefix {prefix:?}"),
                ));
            }
            if local.contains(prefix.as_str()) {
                return Err(ConfigError::conflict(
                    key,
                    "proxy.localprefixes",
                    format!("{prefix:?} cannot be both local-only and proxied"),
                ));
            }
        }
    }
    peers(&p.peers)
}

/// `proxy.peers`: `host:port` addresses, a port, positive intervals.
fn peers(p: &super::PeersConfig) -> Result<(), ConfigError> {
    for (i, a) in p.static_peers.iter().enumerate() {
        units::parse_host_port(a).map_err(|r| {
            ConfigError::value(format!("proxy.peers.static[{i}]"), format!("{a:?}"), r)
        })?;
    }
    if let Some(a) = &p.self_addr {
        units::parse_host_port(a)
            .map_err(|r| ConfigError::value("proxy.peers.self", format!("{a:?}"), r))?;
    }
    if p.dns.as_deref().is_some_and(|d| d.trim().is_empty()) {
        return Err(ConfigError::invalid("proxy.peers.dns", "must not be empty"));
    }
    if p.port == 0 || p.port > u64::from(u16::MAX) {
        return Err(ConfigError::invalid(
            "proxy.peers.port",
            "must be between 1 and 65535",
        ));
    }
    for (key, d) in [
        ("proxy.peers.refresh", p.refresh),
        ("proxy.peers.probeinterval", p.probeinterval),
        ("proxy.peers.probetimeout", p.probetimeout),
    ] {
        if d.is_zero() {
            return Err(ConfigError::invalid(key, "must be greater than zero"));
        }
    }
    credentials("proxy.peers", &p.username, &p.password)
}

/// `proxy.pin`: `REPO_GLOB[:TAG_GLOB]`, the repository part as `allow`/`deny`, the tag part
/// tag characters and `*`.
fn pins(list: &[String]) -> Result<(), ConfigError> {
    for (i, p) in list.iter().enumerate() {
        let (repo, tag) = crate::mirror::pins::split(p);
        globs(&format!("proxy.pin[{i}]"), &[repo.to_owned()]).map_err(|_| {
            ConfigError::value(
                format!("proxy.pin[{i}]"),
                format!("{p:?}"),
                "the repository part is a glob of lowercase letters, digits, \".\", \"_\", \"-\", \"/\" and \"*\" (REPO_GLOB[:TAG_GLOB])",
            )
        })?;
        if let Some(t) = tag
            && (t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c)))
        {
            return Err(ConfigError::value(
                format!("proxy.pin[{i}]"),
                format!("{p:?}"),
                "the tag part after \":\" is a glob of tag characters and \"*\"",
            ));
        }
    }
    Ok(())
}

/// Repository globs of `proxy.allow`/`deny`: repository name characters, `/` and `*`.
fn globs(key: &str, list: &[String]) -> Result<(), ConfigError> {
    for (i, g) in list.iter().enumerate() {
        let why = if g.is_empty() {
            Some("must not be empty")
        } else if g.starts_with('/') || g.ends_with('/') || g.contains("//") {
            Some("must not start or end with \"/\" or contain \"//\"")
        } else if !g
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*".contains(c))
        {
            Some("may hold only lowercase letters, digits, \".\", \"_\", \"-\", \"/\" and \"*\"")
        } else if g.contains("***") {
            Some("\"*\" matches within a path component and \"**\" across; \"***\" means nothing")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ConfigError::value(
                format!("{key}[{i}]"),
                format!("{g:?}"),
                why,
            ));
        }
    }
    Ok(())
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let shown = if url.contains('@') {
        "(redacted: contains credentials)".to_string()
    } else {
        format!("{url:?}")
    };
    let normalized =
        units::parse_http_url(url).map_err(|r| ConfigError::value(key, shown.clone(), r))?;
    if normalized != url {
        return Err(ConfigError::value(
            key,
            shown,
            "must not end with \"/\" or have surrounding spaces",
        ));
    }
    Ok(())
}

fn credentials(
    at: &str,
    username: &Option<String>,
    password: &Option<Secret>,
) -> Result<(), ConfigError> {
    match (username, password) {
        (Some(_), None) => Err(ConfigError::missing(
            format!("{at}.password"),
            format!("{at}.username is set"),
        )),
        (None, Some(_)) => Err(ConfigError::missing(
            format!("{at}.username"),
            format!("{at}.password is set"),
        )),
        _ => Ok(()),
    }
}
