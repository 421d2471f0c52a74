//! Building the typed [`Config`] from a YAML tree whose keys were already
//! checked by [`super::schema::check`]. Absent or null keys keep their
//! defaults; a value of the wrong type or form is an error naming the key.
//!
//! Normalisations done here: `proxy.remoteurl: ""` means no proxy, URLs lose
//! trailing slashes, repository prefixes gain a trailing `/`, `http.prefix:
//! "/"` becomes `""`, and `logstash` becomes [`LogFormat::Json`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::schema::{describe, join};
use super::units;
use super::{
    AuthConfig, AuthPolicyConfig, AuthRuleConfig, Config, ConfigError, HtpasswdAuth, LogFormat,
    LogLevel, PolicyMode, RedisConfig, TlsConfig, TokenAuth, UpstreamConfig,
};

/// Values under one mapping, with the dotted path used in errors.
struct Reader<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> Reader<'a> {
    /// The value at dotted `rel`, and its full key; null counts as absent.
    fn get(&self, rel: &str) -> Option<(&'a Value, String)> {
        let mut cur = self.value;
        for part in rel.split('.') {
            cur = cur.as_mapping()?.get(part)?;
        }
        (!cur.is_null()).then(|| (cur, join(&self.path, rel)))
    }

    /// The mapping at `rel`, if present and not empty of values.
    fn section(&self, rel: &str) -> Option<Reader<'a>> {
        let (v, path) = self.get(rel)?;
        let m = v.as_mapping()?;
        m.values()
            .any(|v| !v.is_null())
            .then_some(Reader { value: v, path })
    }

    fn string(&self, rel: &str) -> Result<Option<String>, ConfigError> {
        self.get(rel).map(|(v, key)| scalar(v, &key)).transpose()
    }

    fn path(&self, rel: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self
            .string(rel)?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from))
    }

    fn required(&self, rel: &str, why: &str) -> Result<String, ConfigError> {
        match self.string(rel)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(ConfigError::missing(join(&self.path, rel), why)),
        }
    }

    fn bool(&self, rel: &str) -> Result<Option<bool>, ConfigError> {
        self.get(rel)
            .map(|(v, key)| match v {
                Value::Bool(b) => Ok(*b),
                Value::String(s) => match s.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => Ok(true),
                    "false" | "no" | "off" => Ok(false),
                    _ => Err(ConfigError::value(
                        key,
                        describe(v),
                        "expected true or false",
                    )),
                },
                _ => Err(ConfigError::value(
                    key,
                    describe(v),
                    "expected true or false",
                )),
            })
            .transpose()
    }

    fn u64(&self, rel: &str) -> Result<Option<u64>, ConfigError> {
        self.get(rel)
            .map(|(v, key)| match v {
                Value::Number(n) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or_default()),
                Value::String(s) => s.trim().parse::<u64>().map_err(|_| {
                    ConfigError::value(key, describe(v), "expected a non-negative integer")
                }),
                _ => Err(ConfigError::value(
                    key,
                    describe(v),
                    "expected a non-negative integer",
                )),
            })
            .transpose()
    }

    /// A finite, non-negative number.
    fn f64(&self, rel: &str) -> Result<Option<f64>, ConfigError> {
        self.get(rel)
            .map(|(v, key)| {
                let n = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                n.filter(|n| n.is_finite() && *n >= 0.0).ok_or_else(|| {
                    ConfigError::value(key, describe(v), "expected a non-negative number")
                })
            })
            .transpose()
    }

    fn duration(&self, rel: &str) -> Result<Option<Duration>, ConfigError> {
        self.get(rel)
            .map(|(v, key)| match v {
                Value::Number(n) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
                    ConfigError::value(
                        key,
                        describe(v),
                        "expected a duration such as \"10s\" or \"168h\", or whole seconds",
                    )
                }),
                Value::String(s) => {
                    units::parse_duration(s).map_err(|r| ConfigError::value(key, describe(v), r))
                }
                _ => Err(ConfigError::value(
                    key,
                    describe(v),
                    "expected a duration such as \"10s\" or \"168h\"",
                )),
            })
            .transpose()
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, ConfigError> {
        self.get(rel)
            .map(|(v, key)| match v {
                Value::Number(n) => n.as_u64().ok_or_else(|| {
                    ConfigError::value(key, describe(v), "expected a size such as \"200GiB\"")
                }),
                Value::String(s) => {
                    units::parse_size(s).map_err(|r| ConfigError::value(key, describe(v), r))
                }
                _ => Err(ConfigError::value(
                    key,
                    describe(v),
                    "expected a size such as \"200GiB\"",
                )),
            })
            .transpose()
    }

    fn addr(&self, rel: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.get(rel)
            .map(|(v, key)| {
                let s = scalar(v, &key)?;
                units::parse_addr(&s).map_err(|r| ConfigError::value(key, describe(v), r))
            })
            .transpose()
    }

    fn url(&self, rel: &str) -> Result<Option<String>, ConfigError> {
        let Some((v, key)) = self.get(rel) else {
            return Ok(None);
        };
        let s = scalar(v, &key)?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        let shown = if s.contains('@') {
            "(redacted: contains credentials)".to_string()
        } else {
            describe(v)
        };
        units::parse_http_url(&s)
            .map(Some)
            .map_err(|r| ConfigError::value(key, shown, r))
    }

    /// A list of strings; a single string counts as a list of one.
    fn list(&self, rel: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some((v, key)) = self.get(rel) else {
            return Ok(None);
        };
        match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| scalar(item, &format!("{key}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => scalar(v, &key).map(|s| Some(vec![s])),
        }
    }

    fn mapping(&self, rel: &str) -> Result<Option<&'a serde_yaml_ng::Mapping>, ConfigError> {
        match self.get(rel) {
            None => Ok(None),
            Some((Value::Mapping(m), _)) => Ok(Some(m)),
            Some((v, key)) => Err(ConfigError::value(key, describe(v), "expected a mapping")),
        }
    }
}

/// A scalar as a string (numbers and booleans as written by YAML).
fn scalar(v: &Value, key: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConfigError::value(key, describe(v), "expected a string")),
    }
}

fn put<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

pub(super) fn build(root: &Value) -> Result<Config, ConfigError> {
    let r = Reader {
        value: root,
        path: String::new(),
    };
    let mut c = Config::default();
    put(&mut c.version, r.string("version")?);

    // log
    if let Some((v, key)) = r.get("log.level") {
        let s = scalar(v, &key)?;
        c.log.level = match s.to_ascii_lowercase().as_str() {
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(ConfigError::value(
                    key,
                    describe(v),
                    "expected one of error, warn, info, debug, trace",
                ));
            }
        };
    }
    if let Some((v, key)) = r.get("log.formatter") {
        let s = scalar(v, &key)?;
        c.log.formatter = match s.to_ascii_lowercase().as_str() {
            "text" | "" => LogFormat::Text,
            "json" | "logstash" => LogFormat::Json,
            _ => {
                return Err(ConfigError::value(
                    key,
                    describe(v),
                    "expected text, json or logstash",
                ));
            }
        };
    }
    if let Some(m) = r.mapping("log.fields")? {
        for (k, v) in m {
            let name = scalar(k, "log.fields")?;
            let key = format!("log.fields.{name}");
            c.log.fields.insert(name, scalar(v, &key)?);
        }
    }
    put(
        &mut c.log.accesslog.disabled,
        r.bool("log.accesslog.disabled")?,
    );

    // storage
    let s = &mut c.storage;
    put(
        &mut s.filesystem.rootdirectory,
        r.path("storage.filesystem.rootdirectory")?,
    );
    put(&mut s.delete.enabled, r.bool("storage.delete.enabled")?);
    let up = &mut s.maintenance.uploadpurging;
    put(
        &mut up.enabled,
        r.bool("storage.maintenance.uploadpurging.enabled")?,
    );
    put(
        &mut up.age,
        r.duration("storage.maintenance.uploadpurging.age")?,
    );
    put(
        &mut up.interval,
        r.duration("storage.maintenance.uploadpurging.interval")?,
    );
    put(
        &mut up.dryrun,
        r.bool("storage.maintenance.uploadpurging.dryrun")?,
    );
    put(
        &mut s.maintenance.readonly.enabled,
        r.bool("storage.maintenance.readonly.enabled")?,
    );
    let layerinfo = r.string("storage.cache.layerinfo")?;
    match (r.string("storage.cache.blobdescriptor")?, layerinfo) {
        (Some(new), Some(old)) if new != old => {
            return Err(ConfigError::conflict(
                "storage.cache.blobdescriptor",
                "storage.cache.layerinfo",
                "layerinfo is the older name of blobdescriptor: set only one",
            ));
        }
        (Some(v), _) | (None, Some(v)) => s.cache.blobdescriptor = v,
        (None, None) => {}
    }
    put(
        &mut s.cache.blobdescriptorsize,
        r.u64("storage.cache.blobdescriptorsize")?,
    );

    // http
    let h = &mut c.http;
    put(&mut h.addr, r.addr("http.addr")?);
    put(&mut h.net, r.string("http.net")?.filter(|s| !s.is_empty()));
    if let Some(p) = r.string("http.prefix")? {
        h.prefix = if p == "/" { String::new() } else { p };
    }
    h.host = r.string("http.host")?.filter(|s| !s.is_empty());
    h.secret = r.string("http.secret")?.filter(|s| !s.is_empty());
    h.relativeurls = r.bool("http.relativeurls")?;
    put(&mut h.draintimeout, r.duration("http.draintimeout")?);
    if let Some(m) = r.mapping("http.headers")? {
        for (k, v) in m {
            let name = scalar(k, "http.headers")?;
            let sub = Reader {
                value: v,
                path: format!("http.headers.{name}"),
            };
            let values = match v {
                Value::Null => Vec::new(),
                Value::Sequence(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| scalar(item, &format!("{}[{i}]", sub.path)))
                    .collect::<Result<_, _>>()?,
                _ => vec![scalar(v, &sub.path)?],
            };
            h.headers.insert(name, values);
        }
    }
    if let Some(addr) = r.addr("http.debug.addr")? {
        h.debug.addr = Some(addr);
    }
    h.debug.token = r.string("http.debug.token")?.filter(|s| !s.is_empty());
    put(
        &mut h.debug.prometheus.enabled,
        r.bool("http.debug.prometheus.enabled")?,
    );
    put(
        &mut h.debug.prometheus.path,
        r.string("http.debug.prometheus.path")?,
    );
    if let Some(tls) = r.section("http.tls") {
        let why = "http.tls needs both a certificate and a key";
        h.tls = Some(TlsConfig {
            certificate: PathBuf::from(tls.required("certificate", why)?),
            key: PathBuf::from(tls.required("key", why)?),
            clientcas: tls
                .list("clientcas")?
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            minimumtls: tls.string("minimumtls")?.filter(|s| !s.is_empty()),
        });
    }
    put(&mut h.http2.disabled, r.bool("http.http2.disabled")?);
    let l = &mut h.limits;
    put(&mut l.maxconns, r.u64("http.limits.maxconns")?);
    put(
        &mut l.maxconnsperclient,
        r.u64("http.limits.maxconnsperclient")?,
    );
    put(
        &mut l.requestspersecond,
        r.f64("http.limits.requestspersecond")?,
    );
    put(&mut l.burst, r.u64("http.limits.burst")?);
    put(
        &mut l.headertimeout,
        r.duration("http.limits.headertimeout")?,
    );
    put(&mut l.bodytimeout, r.duration("http.limits.bodytimeout")?);
    put(&mut l.maxheaderbytes, r.size("http.limits.maxheaderbytes")?);
    put(&mut l.maxheaders, r.u64("http.limits.maxheaders")?);
    put(&mut l.maxstreams, r.u64("http.limits.maxstreams")?);

    // redis
    if let Some(redis) = r.section("redis") {
        let mut rc = RedisConfig {
            addr: redis.string("addr")?.unwrap_or_default(),
            password: redis.string("password")?.filter(|s| !s.is_empty()),
            ..RedisConfig::default()
        };
        if let Some((v, key)) = redis.get("db") {
            rc.db = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ConfigError::value(key, describe(v), "expected a database number (0, 1, …)")
            })?;
        }
        put(&mut rc.dialtimeout, redis.duration("dialtimeout")?);
        put(&mut rc.readtimeout, redis.duration("readtimeout")?);
        put(&mut rc.writetimeout, redis.duration("writetimeout")?);
        put(&mut rc.pool.maxactive, redis.u64("pool.maxactive")?);
        put(&mut rc.pool.maxidle, redis.u64("pool.maxidle")?);
        put(
            &mut rc.pool.idletimeout,
            redis.duration("pool.idletimeout")?,
        );
        put(&mut rc.tls.enabled, redis.bool("tls.enabled")?);
        rc.tls.certificate = redis.path("tls.certificate")?;
        rc.tls.key = redis.path("tls.key")?;
        rc.tls.clientcas = redis
            .list("tls.clientcas")?
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        c.redis = Some(rc);
    }

    // auth
    c.auth = AuthConfig {
        htpasswd: match r.section("auth.htpasswd") {
            Some(a) => Some(HtpasswdAuth {
                realm: a.required("realm", "auth.htpasswd needs a realm and a path")?,
                path: PathBuf::from(a.required("path", "auth.htpasswd needs a realm and a path")?),
            }),
            None => None,
        },
        token: match r.section("auth.token") {
            Some(t) => {
                let why = "auth.token needs realm, service, issuer and rootcertbundle";
                Some(TokenAuth {
                    realm: t.required("realm", why)?,
                    service: t.required("service", why)?,
                    issuer: t.required("issuer", why)?,
                    rootcertbundle: PathBuf::from(t.required("rootcertbundle", why)?),
                    autoredirect: t.bool("autoredirect")?.unwrap_or(false),
                })
            }
            None => None,
        },
        policy: AuthPolicyConfig::default(),
    };
    put(
        &mut c.auth.policy.anonymouspull,
        r.bool("auth.policy.anonymouspull")?,
    );
    if let Some((Value::Sequence(items), key)) = r.get("auth.policy.rules") {
        for (i, item) in items.iter().enumerate() {
            let u = Reader {
                value: item,
                path: format!("{key}[{i}]"),
            };
            c.auth.policy.rules.push(AuthRuleConfig {
                repository: u.required(
                    "repository",
                    "each auth.policy.rules entry needs a repository glob",
                )?,
                pull: u.list("pull")?,
                push: u.list("push")?,
                delete: u.list("delete")?,
            });
        }
    }
    if r.get("auth.htpasswd").is_some() && c.auth.htpasswd.is_none() {
        return Err(ConfigError::missing(
            "auth.htpasswd.realm",
            "auth.htpasswd needs a realm and a path",
        ));
    }
    if r.get("auth.token").is_some() && c.auth.token.is_none() {
        return Err(ConfigError::missing(
            "auth.token.realm",
            "auth.token needs realm, service, issuer and rootcertbundle",
        ));
    }

    // proxy
    let p = &mut c.proxy;
    p.remoteurl = r.url("proxy.remoteurl")?;
    p.username = r.string("proxy.username")?.filter(|s| !s.is_empty());
    p.password = r.string("proxy.password")?.filter(|s| !s.is_empty());
    put(&mut p.ttl, r.duration("proxy.ttl")?);
    put(&mut p.tagttl, r.duration("proxy.tagttl")?);
    put(&mut p.timeout, r.duration("proxy.timeout")?);
    put(&mut p.stalltimeout, r.duration("proxy.stalltimeout")?);
    put(&mut p.connecttimeout, r.duration("proxy.connecttimeout")?);
    put(
        &mut p.revalidatetimeout,
        r.duration("proxy.revalidatetimeout")?,
    );
    put(&mut p.offline, r.bool("proxy.offline")?);
    put(&mut p.maxfetches, r.u64("proxy.maxfetches")?);
    put(&mut p.breakerthreshold, r.u64("proxy.breakerthreshold")?);
    put(
        &mut p.breakermaxbackoff,
        r.duration("proxy.breakermaxbackoff")?,
    );
    p.maxsize = r.size("proxy.maxsize")?;
    p.cafile = r.path("proxy.cafile")?;
    if let Some(list) = r.list("proxy.localprefixes")? {
        p.localprefixes = list.iter().map(|s| units::normalize_prefix(s)).collect();
    }
    p.allow = r.list("proxy.allow")?.unwrap_or_default();
    p.deny = r.list("proxy.deny")?.unwrap_or_default();
    if let Some(mode) = r.string("proxy.policy.mode")? {
        p.policy.mode = match mode.trim().to_ascii_lowercase().as_str() {
            "enforce" => PolicyMode::Enforce,
            "audit" => PolicyMode::Audit,
            _ => {
                return Err(ConfigError::value(
                    "proxy.policy.mode",
                    format!("{mode:?}"),
                    "must be enforce or audit",
                ));
            }
        };
    }
    p.warm.file = r.path("proxy.warm.file")?;
    put(&mut p.warm.interval, r.duration("proxy.warm.interval")?);
    put(&mut p.cooldown, r.duration("proxy.cooldown")?);
    p.policy.contact = r
        .string("proxy.policy.contact")?
        .filter(|s| !s.trim().is_empty());
    if let Some((Value::Sequence(items), key)) = r.get("proxy.upstreams") {
        for (i, item) in items.iter().enumerate() {
            let u = Reader {
                value: item,
                path: format!("{key}[{i}]"),
            };
            let why = "each proxy.upstreams entry needs a name and a remoteurl";
            let name = u.required("name", why)?;
            let remoteurl = u
                .url("remoteurl")?
                .ok_or_else(|| ConfigError::missing(join(&u.path, "remoteurl"), why))?;
            p.upstreams.push(UpstreamConfig {
                name,
                remoteurl,
                username: u.string("username")?.filter(|s| !s.is_empty()),
                password: u.string("password")?.filter(|s| !s.is_empty()),
                prefix: u
                    .string("prefix")?
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| units::normalize_prefix(&s)),
                allow: u.list("allow")?.unwrap_or_default(),
                deny: u.list("deny")?.unwrap_or_default(),
                cooldown: u.duration("cooldown")?,
            });
        }
    }
    Ok(c)
}
