//! Stevedore's configuration: a loader for distribution-style (`registry:2`)
//! `config.yml` files, so that guides written for distribution work here.
//!
//! This module owns the configuration types, their defaults, reading the YAML
//! file, the `REGISTRY_*` environment overlay ([`env`]), the check of keys
//! against the schema ([`schema`], traced from the structs below), reading
//! the structs with serde ([`de`]), value forms ([`units`]) and
//! [`Config::validate`]. It must not do anything else: it opens no socket,
//! reads no certificate, htpasswd or CA file (only `REGISTRY_*_FILE`
//! secrets), creates no directory and installs no logger; the code that uses
//! a setting is the one that acts on it.
//!
//! **Adding a key**: add the field to its struct below with a doc comment,
//! its default in the struct's `Default`, and a reader
//! `#[serde(deserialize_with = "de::…")]` for its form (`text`, `secret`,
//! `flag`, `uint`, `duration`, `size`, `strings`, …); a new section is a new
//! struct deriving `Debug` and `Deserialize` with `#[serde(default)]`. A
//! password, token or key is an `Option<`[`Secret`]`>` read by `de::secret`:
//! it then prints as `<redacted>` in the derived `Debug`, may come from a
//! `REGISTRY_…_FILE`, and its text is reached only by [`Secret::expose`]. Document the key
//! in `config/default.yml` (a test checks every key is there). The schema
//! check, "did you mean", the `REGISTRY_*` variable and error messages naming
//! the key follow from the struct. Checks across keys go in `validate.rs`.
//! A distribution key stevedore does not implement goes in
//! [`schema::EXTRA`].
//!
//! Loading is strict: an unknown key (a typo) or a key distribution has but
//! stevedore does not implement stops start-up with a message naming the
//! dotted key, as does a bad value.
//!
//! Differences from distribution, all deliberate:
//! * keys stevedore adds are marked *stevedore extension* below;
//! * `storage` may be omitted: it defaults to `filesystem` at `./data`;
//! * a bare integer duration means seconds (see [`units`]);
//! * `storage.filesystem.maxthreads`, `storage.tag`,
//!   `health.storagedriver`, `redis.pool.maxidle` and `redis.pool.idletimeout`
//!   are accepted and have no effect, as is `proxy.cacheTTL` (not a key of
//!   distribution, which ignores it, but its config-cache.yml ships it);
//! * `http.relativeurls` unset means relative `Location` URLs;
//! * an unsupported key whose value configures nothing (`false`, empty) is
//!   accepted.

mod de;
mod env;
mod error;
mod notifications;
mod schema;
mod secret;
pub mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

pub use error::ConfigError;
pub use notifications::{
    EndpointConfig, IgnoreConfig, NotificationEvents, NotificationsConfig, NotifyFormat, Overflow,
    QueueConfig, SigningConfig,
};
pub use secret::Secret;

/// The upstream a configuration without a file mirrors: Docker Hub.
pub const DOCKER_HUB_URL: &str = "https://registry-1.docker.io";

const HOUR: u64 = 3600;

/// A whole stevedore configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Configuration format version; must be `"0.1"` (distribution's).
    #[serde(deserialize_with = "de::text")]
    pub version: String,
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub proxy: ProxyConfig,
    /// `redis`: the server behind `storage.cache.blobdescriptor: redis`; `None` when absent.
    pub redis: Option<RedisConfig>,
    /// *Stevedore extension*: the web console under `/ui/`.
    pub ui: UiConfig,
    /// Webhooks told of pushes, pulls, mounts and deletes.
    pub notifications: NotificationsConfig,
}

/// `ui` (*stevedore extension*): the web console (`/ui/`): browse repositories, tags and
/// manifests, the mirror dashboard, and (for users whose role allows) delete, GC, evict, warm.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct UiConfig {
    /// Serve the console; default true.
    #[serde(deserialize_with = "de::flag")]
    pub enabled: bool,
    /// Which listener serves it: `main` (default, same origin as `/v2/`) or `debug`
    /// (`http.debug.addr`, which must then be set).
    pub listener: UiListener,
    /// A console login ends after this long without a request; default 12h.
    #[serde(deserialize_with = "de::duration")]
    pub sessionttl: Duration,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            listener: UiListener::Main,
            sessionttl: Duration::from_secs(12 * HOUR),
        }
    }
}

/// `ui.listener`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UiListener {
    #[default]
    Main,
    Debug,
}

/// `log`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `log.level`: `error`, `warn` (or `warning`), `info`, `debug`, `trace`.
    pub level: LogLevel,
    /// `log.formatter`: `text`, `json`, or `logstash` (treated as `json`).
    pub formatter: LogFormat,
    /// `log.fields`: static fields added to every log line.
    #[serde(deserialize_with = "de::text_map")]
    pub fields: BTreeMap<String, String>,
    pub accesslog: AccessLogConfig,
}

/// Log verbosity, from least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The lowercase name, as used in configuration and `EnvFilter`s.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `log.accesslog`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct AccessLogConfig {
    #[serde(deserialize_with = "de::flag")]
    pub disabled: bool,
}

/// `storage`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    pub filesystem: FilesystemConfig,
    /// `storage.s3`: blobs in an S3-compatible bucket instead of `storage.filesystem`;
    /// `None` when absent. Giving both is an error (one storage driver, as distribution).
    pub s3: Option<S3Config>,
    pub redirect: RedirectConfig,
    pub delete: DeleteConfig,
    pub maintenance: MaintenanceConfig,
    pub cache: StorageCache,
}

/// `storage.filesystem`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct FilesystemConfig {
    /// Where blobs, manifests and metadata live; default `./data`.
    #[serde(deserialize_with = "de::path")]
    pub rootdirectory: PathBuf,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        FilesystemConfig {
            rootdirectory: PathBuf::from("./data"),
        }
    }
}

impl StorageConfig {
    /// The local directory of the sled index, staged writes (`tmp/`), upload sessions and the
    /// generated `http-secret`: `storage.filesystem.rootdirectory`, or with `storage.s3` its
    /// `cachedirectory` (a rebuildable cache in front of the bucket).
    pub fn local_root(&self) -> &Path {
        match &self.s3 {
            Some(s3) => &s3.cachedirectory,
            None => &self.filesystem.rootdirectory,
        }
    }
}

/// `storage.s3`: distribution's S3 driver keys (S3-compatible stores through
/// `regionendpoint`). `multipartcopychunksize`, `multipartcopymaxconcurrency` and
/// `multipartcopythresholdsize` are accepted and have no effect: stevedore never copies objects.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// Access key id; unset means the environment's credentials (`AWS_ACCESS_KEY_ID`, an
    /// instance or pod role).
    #[serde(deserialize_with = "de::opt_text")]
    pub accesskey: Option<String>,
    /// Secret access key (or `REGISTRY_STORAGE_S3_SECRETKEY_FILE`).
    #[serde(deserialize_with = "de::secret")]
    pub secretkey: Option<Secret>,
    /// AWS region of the bucket (required, as in distribution).
    #[serde(deserialize_with = "de::text")]
    pub region: String,
    /// Endpoint of an S3-compatible store (`http://minio:9000`); unset means AWS.
    #[serde(deserialize_with = "de::opt_text")]
    pub regionendpoint: Option<String>,
    /// Bucket name (required).
    #[serde(deserialize_with = "de::text")]
    pub bucket: String,
    /// Key prefix of everything stevedore writes in the bucket; default empty.
    #[serde(deserialize_with = "de::text")]
    pub rootdirectory: String,
    /// HTTPS to the endpoint when `regionendpoint` names no scheme; default true.
    #[serde(deserialize_with = "de::flag")]
    pub secure: bool,
    /// Do not check the endpoint's TLS certificate: not supported (only false is accepted).
    #[serde(deserialize_with = "de::flag")]
    pub skipverify: bool,
    /// Path-style URLs (`endpoint/bucket/key`); default: path style with `regionendpoint`,
    /// virtual-hosted style on AWS.
    #[serde(deserialize_with = "de::opt_flag")]
    pub forcepathstyle: Option<bool>,
    /// Signature version 4; must be true (v2 signatures are not supported).
    #[serde(deserialize_with = "de::flag")]
    pub v4auth: bool,
    /// Server-side encryption with KMS when `keyid` is set; without it the bucket's
    /// default encryption applies.
    #[serde(deserialize_with = "de::flag")]
    pub encrypt: bool,
    /// KMS key id for `encrypt`.
    #[serde(deserialize_with = "de::opt_text")]
    pub keyid: Option<String>,
    /// Size of the parts of multipart uploads; default 10MiB, at least 5MiB, at most 5GiB.
    #[serde(deserialize_with = "de::size")]
    pub chunksize: u64,
    /// Storage class of new objects; default `STANDARD`.
    #[serde(deserialize_with = "de::text")]
    pub storageclass: String,
    /// `User-Agent` of requests to the store; default stevedore's.
    #[serde(deserialize_with = "de::opt_text")]
    pub useragent: Option<String>,
    /// Canned ACL of new objects; only `private` (the default) is supported.
    #[serde(deserialize_with = "de::text")]
    pub objectacl: String,
    /// *stevedore extension*: the local directory of the index, staged writes and upload
    /// sessions (a rebuildable cache in front of the bucket); default `./data`.
    #[serde(deserialize_with = "de::path")]
    pub cachedirectory: PathBuf,
    /// *stevedore extension*: how stale a replica's copy of a tag may be. A tag read more
    /// than this long after this replica last checked it in the bucket is checked again (one
    /// small GET), so a push or delete through another replica shows within this bound; a
    /// write through this replica shows at once. Default 5s; 0 checks on every read.
    #[serde(deserialize_with = "de::duration")]
    pub tagrefresh: Duration,
}

/// Default part size of multipart uploads (distribution's).
pub const S3_DEFAULT_CHUNK_SIZE: u64 = 10 << 20;
/// Smallest part S3 accepts (but the last).
pub const S3_MIN_CHUNK_SIZE: u64 = 5 << 20;
/// Largest part S3 accepts.
pub const S3_MAX_CHUNK_SIZE: u64 = 5 << 30;

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            accesskey: None,
            secretkey: None,
            region: String::new(),
            regionendpoint: None,
            bucket: String::new(),
            rootdirectory: String::new(),
            secure: true,
            skipverify: false,
            forcepathstyle: None,
            v4auth: true,
            encrypt: false,
            keyid: None,
            chunksize: S3_DEFAULT_CHUNK_SIZE,
            storageclass: "STANDARD".to_owned(),
            useragent: None,
            objectacl: "private".to_owned(),
            cachedirectory: PathBuf::from("./data"),
            tagrefresh: Duration::from_secs(5),
        }
    }
}

/// `storage.redirect`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct RedirectConfig {
    /// Serve blob GETs of an object-store backend through the registry instead of
    /// redirecting clients to a short-lived presigned URL; default false (redirect).
    #[serde(deserialize_with = "de::flag")]
    pub disable: bool,
}

/// `storage.delete`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct DeleteConfig {
    /// Allow `DELETE` of manifests and blobs; default false.
    #[serde(deserialize_with = "de::flag")]
    pub enabled: bool,
}

/// `storage.maintenance`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct MaintenanceConfig {
    pub uploadpurging: UploadPurging,
    pub readonly: ReadOnly,
    /// *stevedore extension*: garbage collection and eviction on a shared bucket.
    pub gc: SharedGc,
}

/// `storage.maintenance.gc` (*stevedore extension*): the one maintenance job on a
/// `storage.s3` bucket (`stevedore gc` as a CronJob, or the replicas themselves), and the
/// access records the replicas write for its eviction. Unused without `storage.s3`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct SharedGc {
    /// An unreferenced pushed blob is deleted only by a run at least this long after the
    /// run that first found it unreferenced (and after its last write or use); default 1h.
    #[serde(deserialize_with = "de::duration")]
    pub grace: Duration,
    /// How often each replica tries to run the job itself (taking the bucket's lease); 0
    /// (the default) leaves it to `stevedore gc` (a CronJob).
    #[serde(deserialize_with = "de::duration")]
    pub interval: Duration,
    /// How long the bucket's lease lasts unless its holder renews it (every third of it), so
    /// a crashed run's lease lapses; default 60s.
    #[serde(deserialize_with = "de::duration")]
    pub leasettl: Duration,
    /// How often each replica writes the blobs it served to the bucket (S3 has no atime;
    /// eviction of cached content goes by these records); default 60s.
    #[serde(deserialize_with = "de::duration")]
    pub accessinterval: Duration,
}

impl Default for SharedGc {
    fn default() -> Self {
        SharedGc {
            grace: Duration::from_secs(HOUR),
            interval: Duration::ZERO,
            leasettl: Duration::from_secs(60),
            accessinterval: Duration::from_secs(60),
        }
    }
}

/// `storage.maintenance.uploadpurging`: removal of abandoned uploads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct UploadPurging {
    /// Default true.
    #[serde(deserialize_with = "de::flag")]
    pub enabled: bool,
    /// Uploads older than this are removed; default 168h.
    #[serde(deserialize_with = "de::duration")]
    pub age: Duration,
    /// How often to look; default 24h.
    #[serde(deserialize_with = "de::duration")]
    pub interval: Duration,
    /// Only log what would be removed.
    #[serde(deserialize_with = "de::flag")]
    pub dryrun: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging {
            enabled: true,
            age: Duration::from_secs(168 * HOUR),
            interval: Duration::from_secs(24 * HOUR),
            dryrun: false,
        }
    }
}

/// `storage.maintenance.readonly`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ReadOnly {
    /// Refuse pushes and deletes.
    #[serde(deserialize_with = "de::flag")]
    pub enabled: bool,
}

/// `storage.cache`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct StorageCache {
    /// `"inmemory"` (the default): layer info in memory only; `"redis"`: in the
    /// `redis` server too, shared by every replica, with the memory cache in front.
    /// `storage.cache.layerinfo` is accepted as its older name, as distribution does.
    #[serde(deserialize_with = "de::text")]
    pub blobdescriptor: String,
    /// Entries of the in-memory blob-descriptor cache; default 10000.
    #[serde(deserialize_with = "de::uint")]
    pub blobdescriptorsize: u64,
}

impl Default for StorageCache {
    fn default() -> Self {
        StorageCache {
            blobdescriptor: "inmemory".into(),
            blobdescriptorsize: 10_000,
        }
    }
}

/// `http`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Listen address; default `0.0.0.0:5000`. `:5000` means all interfaces.
    #[serde(deserialize_with = "de::addr")]
    pub addr: SocketAddr,
    /// Only `"tcp"`.
    #[serde(deserialize_with = "de::text")]
    pub net: String,
    /// Only `""` is supported; `"/"` is accepted and stored as `""`.
    #[serde(deserialize_with = "de::prefix")]
    pub prefix: String,
    /// Externally reachable base URL, used for absolute `Location` headers.
    #[serde(deserialize_with = "de::opt_text")]
    pub host: Option<String>,
    /// `Location` headers: `Some(true)` relative (`/v2/…`), `Some(false)` absolute,
    /// built from the request's `Host` (or `X-Forwarded-Proto`/`X-Forwarded-Host`), as
    /// distribution does. Unset: relative (stevedore's default). `host`, when set,
    /// wins over both, as in distribution.
    #[serde(deserialize_with = "de::opt_flag")]
    pub relativeurls: Option<bool>,
    /// How long to let connections finish on shutdown; default 10s.
    #[serde(deserialize_with = "de::duration")]
    pub draintimeout: Duration,
    /// Headers added to every response.
    #[serde(deserialize_with = "de::list_map")]
    pub headers: BTreeMap<String, Vec<String>>,
    pub debug: DebugConfig,
    /// Serve HTTPS when set.
    pub tls: Option<TlsConfig>,
    pub http2: Http2Config,
    /// *Stevedore extension*: connection and request limits.
    pub limits: LimitsConfig,
    /// Key for signing upload state (the `_state` parameter of upload URLs); when
    /// unset, a random key kept in the storage root is used.
    #[serde(deserialize_with = "de::secret")]
    pub secret: Option<Secret>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5000),
            net: "tcp".into(),
            prefix: String::new(),
            host: None,
            relativeurls: None,
            draintimeout: Duration::from_secs(10),
            headers: BTreeMap::new(),
            debug: DebugConfig::default(),
            tls: None,
            http2: Http2Config::default(),
            limits: LimitsConfig::default(),
            secret: None,
        }
    }
}

/// `http.debug`: a second listener for metrics.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct DebugConfig {
    /// Listen address of the debug server; none by default.
    #[serde(deserialize_with = "de::opt_addr")]
    pub addr: Option<SocketAddr>,
    /// Bearer token the mutating debug endpoints (`POST /debug/gc`) require. Unset: they
    /// answer only on a loopback listener.
    #[serde(deserialize_with = "de::secret")]
    pub token: Option<Secret>,
    pub prometheus: PrometheusConfig,
}

/// `http.debug.prometheus`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    /// Default false; needs `http.debug.addr`.
    #[serde(deserialize_with = "de::flag")]
    pub enabled: bool,
    /// Default `/metrics`.
    #[serde(deserialize_with = "de::text")]
    pub path: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            enabled: false,
            path: "/metrics".into(),
        }
    }
}

/// `http.tls`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    #[serde(deserialize_with = "de::path")]
    pub certificate: PathBuf,
    /// PEM private key.
    #[serde(deserialize_with = "de::path")]
    pub key: PathBuf,
    /// PEM CA bundles; when non-empty, clients must present a certificate.
    #[serde(deserialize_with = "de::paths")]
    pub clientcas: Vec<PathBuf>,
    /// `"tls1.2"` or `"tls1.3"`; none means the TLS library's default.
    #[serde(deserialize_with = "de::opt_text")]
    pub minimumtls: Option<String>,
}

/// `http.http2`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Http2Config {
    /// Serve HTTP/1.1 only.
    #[serde(deserialize_with = "de::flag")]
    pub disabled: bool,
}

/// `http.limits` (*stevedore extension*): what one client, and all of them
/// together, may hold of the server. The defaults do not get in the way of
/// normal use (a `docker pull` opens a handful of connections).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Open connections in all; more are closed at once. Default 4096;
    /// 0 = unlimited.
    #[serde(deserialize_with = "de::uint")]
    pub maxconns: u64,
    /// Open connections from one client address (an IPv6 client is its /64);
    /// more are answered 429 and closed. Default 256; 0 = unlimited.
    #[serde(deserialize_with = "de::uint")]
    pub maxconnsperclient: u64,
    /// Sustained requests per second from one client address; more are
    /// answered 429 with `Retry-After`. Default 0 = unlimited.
    #[serde(deserialize_with = "de::number")]
    pub requestspersecond: f64,
    /// Requests one client may send at once before the rate applies;
    /// default 0 = twice `requestspersecond` (at least 1).
    #[serde(deserialize_with = "de::uint")]
    pub burst: u64,
    /// A client must send a request's headers (and finish a TLS handshake)
    /// within this; default 30s. An idle keep-alive connection is not
    /// cut off by it: `idletimeout` is.
    #[serde(deserialize_with = "de::duration")]
    pub headertimeout: Duration,
    /// A kept-alive HTTP/1 connection on which nothing is read or written
    /// for this long, between requests, is closed; default 5m; 0 = never
    /// (as distribution). *stevedore extension*
    #[serde(deserialize_with = "de::duration")]
    pub idletimeout: Duration,
    /// A request body that sends no byte for this long is abandoned; default
    /// 60s.
    #[serde(deserialize_with = "de::duration")]
    pub bodytimeout: Duration,
    /// Largest request head (HTTP/1 request line + headers, HTTP/2 header
    /// list); default 64KiB, between 8KiB and 1MiB.
    #[serde(deserialize_with = "de::size")]
    pub maxheaderbytes: u64,
    /// Most headers in an HTTP/1 request; default 100.
    #[serde(deserialize_with = "de::uint")]
    pub maxheaders: u64,
    /// Concurrent streams of one HTTP/2 connection; default 128.
    #[serde(deserialize_with = "de::uint")]
    pub maxstreams: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            maxconns: 4096,
            maxconnsperclient: 256,
            requestspersecond: 0.0,
            burst: 0,
            headertimeout: Duration::from_secs(30),
            idletimeout: Duration::from_secs(300),
            bodytimeout: Duration::from_secs(60),
            maxheaderbytes: 64 * 1024,
            maxheaders: 100,
            maxstreams: 128,
        }
    }
}

impl LimitsConfig {
    /// The effective burst: `burst`, or twice the rate (at least 1) when 0.
    pub fn effective_burst(&self) -> f64 {
        if self.burst > 0 {
            self.burst as f64
        } else {
            (self.requestspersecond * 2.0).ceil().max(1.0)
        }
    }
}

/// `auth`: at most one of its kinds, and the access policy.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    pub htpasswd: Option<HtpasswdAuth>,
    pub token: Option<TokenAuth>,
    pub builtin: Option<BuiltinAuth>,
    pub policy: AuthPolicyConfig,
}

/// `auth.builtin` (*stevedore extension*): stevedore is its own token server.
/// Users, roles and their rules are kept in the index and managed with
/// `stevedore user …` / `stevedore role …` (or the console); clients log in
/// at `GET /auth/token` on the main listener (distribution's token protocol).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct BuiltinAuth {
    /// The token endpoint's URL as clients reach it (the challenge's realm).
    /// Empty: `http.host` (or the request's scheme and `Host`) + `/auth/token`.
    #[serde(deserialize_with = "de::text")]
    pub realm: String,
    /// The `service` named in challenges and tokens' audience.
    #[serde(deserialize_with = "de::text")]
    pub service: String,
    /// Tokens' issuer (`iss`).
    #[serde(deserialize_with = "de::text")]
    pub issuer: String,
    /// How long an issued token is valid; default 5m.
    #[serde(deserialize_with = "de::duration")]
    pub expiration: Duration,
    /// The administrator created at the first start (when no user holds the
    /// `admin` role).
    pub firstadmin: FirstAdminConfig,
}

impl Default for BuiltinAuth {
    fn default() -> Self {
        BuiltinAuth {
            realm: String::new(),
            service: "stevedore".into(),
            issuer: "stevedore".into(),
            expiration: Duration::from_secs(300),
            firstadmin: FirstAdminConfig::default(),
        }
    }
}

/// `auth.builtin.firstadmin`: the first administrator's name and password.
/// Without a password (here, in `REGISTRY_AUTH_BUILTIN_FIRSTADMIN_PASSWORD`
/// or a file) one is generated and printed to the log once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct FirstAdminConfig {
    /// Default `admin`.
    #[serde(deserialize_with = "de::text")]
    pub username: String,
    #[serde(deserialize_with = "de::secret")]
    pub password: Option<Secret>,
    /// A file holding the password (its first line).
    #[serde(deserialize_with = "de::opt_path")]
    pub passwordfile: Option<PathBuf>,
}

impl Default for FirstAdminConfig {
    fn default() -> Self {
        FirstAdminConfig {
            username: "admin".into(),
            password: None,
            passwordfile: None,
        }
    }
}

/// `auth.policy` (*stevedore extension*): what users may do beyond being
/// authenticated. Needs `auth.htpasswd` or `auth.token`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct AuthPolicyConfig {
    /// Let requests without credentials pull (manifests, blobs, tags,
    /// referrers; not `GET /v2/` or the catalog). Default false.
    #[serde(deserialize_with = "de::flag")]
    pub anonymouspull: bool,
    /// Per-repository rules; the first whose `repository` glob matches
    /// decides. A repository no rule matches is open to every authenticated
    /// user.
    pub rules: Vec<AuthRuleConfig>,
}

/// `auth.policy.rules[]`: who may pull, push or delete in the repositories
/// matching `repository`. An action the rule does not list stays open to
/// every authenticated user; a list names users (htpasswd users, or a
/// token's `sub`), `"*"` meaning any authenticated user, `[]` nobody.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct AuthRuleConfig {
    /// Glob on repository names; `*` matches any characters, `/` included
    /// (`team/*` covers `team/a/b`).
    #[serde(deserialize_with = "de::text")]
    pub repository: String,
    #[serde(deserialize_with = "de::opt_strings")]
    pub pull: Option<Vec<String>>,
    #[serde(deserialize_with = "de::opt_strings")]
    pub push: Option<Vec<String>>,
    #[serde(deserialize_with = "de::opt_strings")]
    pub delete: Option<Vec<String>>,
}

/// `auth.htpasswd`: basic authentication against a bcrypt htpasswd file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct HtpasswdAuth {
    #[serde(deserialize_with = "de::text")]
    pub realm: String,
    #[serde(deserialize_with = "de::path")]
    pub path: PathBuf,
}

/// `auth.token`: bearer tokens issued by an external token server.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct TokenAuth {
    #[serde(deserialize_with = "de::text")]
    pub realm: String,
    #[serde(deserialize_with = "de::text")]
    pub service: String,
    #[serde(deserialize_with = "de::text")]
    pub issuer: String,
    #[serde(deserialize_with = "de::path")]
    pub rootcertbundle: PathBuf,
    #[serde(deserialize_with = "de::flag")]
    pub autoredirect: bool,
}

/// `redis`: distribution's Redis keys. Used by `storage.cache.blobdescriptor: redis`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// `host:port` of the server.
    #[serde(deserialize_with = "de::text")]
    pub addr: String,
    #[serde(deserialize_with = "de::secret")]
    pub password: Option<Secret>,
    /// Database number; default 0.
    #[serde(deserialize_with = "de::db")]
    pub db: i64,
    /// Connect timeout; default 1s (stevedore's: distribution waits forever).
    #[serde(deserialize_with = "de::duration")]
    pub dialtimeout: Duration,
    /// Timeout of one command's reply; default 1s.
    #[serde(deserialize_with = "de::duration")]
    pub readtimeout: Duration,
    /// Timeout of sending one command; default 1s. Commands are sent and answered
    /// as one exchange, so the larger of `readtimeout` and `writetimeout` bounds it.
    #[serde(deserialize_with = "de::duration")]
    pub writetimeout: Duration,
    pub pool: RedisPool,
    pub tls: RedisTls,
}

/// `redis.tls`: talk to Redis over TLS.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct RedisTls {
    /// Use TLS; the server's certificate is checked against `clientcas`, or the system's
    /// roots when none is given.
    #[serde(deserialize_with = "de::flag")]
    pub enabled: bool,
    /// PEM client certificate (with `key`), for a Redis that asks for one.
    #[serde(deserialize_with = "de::opt_path")]
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`.
    #[serde(deserialize_with = "de::opt_path")]
    pub key: Option<PathBuf>,
    /// PEM CA bundles trusted for the Redis server's certificate.
    #[serde(deserialize_with = "de::paths")]
    pub clientcas: Vec<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            addr: String::new(),
            password: None,
            db: 0,
            dialtimeout: Duration::from_secs(1),
            readtimeout: Duration::from_secs(1),
            writetimeout: Duration::from_secs(1),
            pool: RedisPool::default(),
            tls: RedisTls::default(),
        }
    }
}

/// `redis.pool`. stevedore keeps one multiplexed connection (reconnected when it
/// breaks) instead of a pool: `maxactive` bounds the commands in flight on it;
/// `maxidle` and `idletimeout` have nothing to act on and are accepted without effect.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct RedisPool {
    /// Commands in flight at once; 0 (default) = no bound.
    #[serde(deserialize_with = "de::uint")]
    pub maxactive: u64,
    #[serde(deserialize_with = "de::uint")]
    pub maxidle: u64,
    #[serde(deserialize_with = "de::duration")]
    pub idletimeout: Duration,
}

/// `proxy`: pull-through caching of upstream registries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// The upstream registry mirrored for repositories not matched by an
    /// `upstreams` entry; `None` (no `proxy` section) = a private registry.
    /// Stored without a trailing slash.
    #[serde(deserialize_with = "de::url")]
    pub remoteurl: Option<String>,
    #[serde(deserialize_with = "de::secret_plain")]
    pub username: Option<String>,
    #[serde(deserialize_with = "de::secret")]
    pub password: Option<Secret>,
    /// Expiry of proxied content; default 168h; zero = never expires.
    #[serde(deserialize_with = "de::duration")]
    pub ttl: Duration,
    /// *Stevedore extension*: how long a proxied tag is trusted before it is
    /// revalidated upstream with a `HEAD`; default 60s.
    #[serde(deserialize_with = "de::duration")]
    pub tagttl: Duration,
    /// *Stevedore extension*: connect + response-header timeout of each
    /// upstream request; default 30s.
    #[serde(deserialize_with = "de::duration")]
    pub timeout: Duration,
    /// *Stevedore extension*: a blob body that sends no byte for this long is
    /// abandoned; default 60s.
    #[serde(deserialize_with = "de::duration")]
    pub stalltimeout: Duration,
    /// *Stevedore extension*: TCP connect timeout of each upstream connection
    /// (capped by `timeout`); default 5s.
    #[serde(deserialize_with = "de::duration")]
    pub connecttimeout: Duration,
    /// *Stevedore extension*: how long a request for an expired cached tag waits
    /// for the upstream's answer before the cached manifest is served (the check
    /// goes on in the background); default 2s.
    #[serde(deserialize_with = "de::duration")]
    pub revalidatetimeout: Duration,
    /// *Stevedore extension*: never contact an upstream; serve the cache only.
    #[serde(deserialize_with = "de::flag")]
    pub offline: bool,
    /// *Stevedore extension*: concurrent requests to each upstream; more wait in a
    /// queue; default 16.
    #[serde(deserialize_with = "de::uint")]
    pub maxfetches: u64,
    /// *Stevedore extension*: consecutive upstream failures (timeouts, connection
    /// failures, 5xx) that open the circuit breaker; 0 = no breaker; default 3.
    #[serde(deserialize_with = "de::uint")]
    pub breakerthreshold: u64,
    /// *Stevedore extension*: longest time the breaker stays open before it lets
    /// one probe through (it starts at 1s and doubles); default 60s.
    #[serde(deserialize_with = "de::duration")]
    pub breakermaxbackoff: Duration,
    /// *Stevedore extension*: cache size bound in bytes; `None` = unbounded.
    #[serde(deserialize_with = "de::opt_size")]
    pub maxsize: Option<u64>,
    /// *Stevedore extension*: extra PEM CA bundle trusted for upstream HTTPS.
    #[serde(deserialize_with = "de::opt_path")]
    pub cafile: Option<PathBuf>,
    /// *Stevedore extension*: repository name prefixes that are local-only
    /// (never proxied), each ending with `/`, e.g. `["local/", "team/"]`.
    #[serde(deserialize_with = "de::prefixes")]
    pub localprefixes: Vec<String>,
    /// *Stevedore extension*: repository globs the default upstream may serve
    /// (`*` within one path component, `**` across); empty = any.
    #[serde(deserialize_with = "de::strings")]
    pub allow: Vec<String>,
    /// *Stevedore extension*: repository globs the default upstream must not serve;
    /// checked before `allow`.
    #[serde(deserialize_with = "de::strings")]
    pub deny: Vec<String>,
    /// *Stevedore extension*: how `allow`/`deny` rules are applied.
    pub policy: PolicyConfig,
    /// *Stevedore extension*: `REPO_GLOB[:TAG_GLOB]` patterns of cached images that
    /// eviction (`maxsize`, `ttl`) never removes, e.g. `["library/alpine:*", "bitnami/**"]`.
    #[serde(deserialize_with = "de::strings")]
    pub pin: Vec<String>,
    /// *Stevedore extension*: further upstream registries.
    pub upstreams: Vec<UpstreamConfig>,
    /// *Stevedore extension*: images fetched ahead of use.
    pub warm: WarmConfig,
    /// *Stevedore extension*: a tag whose upstream digest stevedore first saw less than this
    /// long ago is answered with the tag's previous digest (refused when it has none);
    /// zero = off (default). The default for `upstreams[].cooldown`.
    #[serde(deserialize_with = "de::duration")]
    pub cooldown: Duration,
    /// *Stevedore extension*: the other replicas of this mirror, so that each blob (and
    /// each tag revalidation) is fetched upstream by one replica only.
    pub peers: PeersConfig,
}

/// `proxy.peers` (*stevedore extension*): replicas that share upstream fetches. The owner of
/// a blob (by digest) or a tag (by repository and tag) is chosen by rendezvous hashing over
/// the live replicas; the others fetch through it. Empty (default) = no peers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PeersConfig {
    /// `host:port` of every replica's main listener, this one included.
    #[serde(rename = "static", deserialize_with = "de::strings")]
    pub static_peers: Vec<String>,
    /// A DNS name whose A/AAAA records are the replicas (a Kubernetes headless Service),
    /// resolved every `refresh`; each address is asked on `port`.
    #[serde(deserialize_with = "de::opt_text")]
    pub dns: Option<String>,
    /// The main listener's port on replicas found by `dns`; default 5000.
    #[serde(deserialize_with = "de::uint")]
    pub port: u64,
    /// This replica's `host:port` as its peers name it; unset = recognised by the instance
    /// id its own probe answers with.
    #[serde(rename = "self", deserialize_with = "de::opt_text")]
    pub self_addr: Option<String>,
    /// How often `dns` is resolved again; default 10s.
    #[serde(deserialize_with = "de::duration")]
    pub refresh: Duration,
    /// How often each peer is probed (`GET /v2/`); default 2s.
    #[serde(deserialize_with = "de::duration")]
    pub probeinterval: Duration,
    /// A probe (and a forwarded request's connect + headers) fails after this long;
    /// default 1s.
    #[serde(deserialize_with = "de::duration")]
    pub probetimeout: Duration,
    /// Credentials for requests to peers, when their `auth` asks for them.
    #[serde(deserialize_with = "de::secret_plain")]
    pub username: Option<String>,
    #[serde(deserialize_with = "de::secret")]
    pub password: Option<Secret>,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            static_peers: Vec::new(),
            dns: None,
            port: 5000,
            self_addr: None,
            refresh: Duration::from_secs(10),
            probeinterval: Duration::from_secs(2),
            probetimeout: Duration::from_secs(1),
            username: None,
            password: None,
        }
    }
}

impl PeersConfig {
    /// Whether any peer source is configured.
    pub fn enabled(&self) -> bool {
        !self.static_peers.is_empty() || self.dns.is_some()
    }
}

/// `proxy.warm` (*stevedore extension*).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct WarmConfig {
    /// A warm list (see README "Warm lists"), warmed at start-up and every `interval`.
    #[serde(deserialize_with = "de::opt_path")]
    pub file: Option<PathBuf>,
    /// Time between warm runs; zero (default) = only at start-up and on demand.
    #[serde(deserialize_with = "de::duration")]
    pub interval: Duration,
}

/// `proxy.policy` (*stevedore extension*).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// `enforce` (default): refused pulls answer 403 DENIED; `audit`: they are logged and
    /// counted, and served.
    pub mode: PolicyMode,
    /// Told in every refusal: how to ask for access (e.g. a URL or a team's channel).
    #[serde(deserialize_with = "de::opt_text")]
    pub contact: Option<String>,
}

/// `proxy.policy.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PolicyMode {
    #[default]
    Enforce,
    Audit,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            remoteurl: None,
            username: None,
            password: None,
            ttl: Duration::from_secs(168 * HOUR),
            tagttl: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            stalltimeout: Duration::from_secs(60),
            connecttimeout: Duration::from_secs(5),
            revalidatetimeout: Duration::from_secs(2),
            offline: false,
            maxfetches: 16,
            breakerthreshold: 3,
            breakermaxbackoff: Duration::from_secs(60),
            maxsize: None,
            cafile: None,
            localprefixes: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            policy: PolicyConfig::default(),
            pin: Vec::new(),
            upstreams: Vec::new(),
            warm: WarmConfig::default(),
            cooldown: Duration::ZERO,
            peers: PeersConfig::default(),
        }
    }
}

/// `proxy.upstreams[]` (*stevedore extension*): one more upstream registry.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct UpstreamConfig {
    /// Registry host name, e.g. `"ghcr.io"`: matched against containerd's
    /// `?ns=` query parameter.
    #[serde(deserialize_with = "de::text")]
    pub name: String,
    /// Base URL, without trailing slash.
    #[serde(deserialize_with = "de::url_or_empty")]
    pub remoteurl: String,
    #[serde(deserialize_with = "de::secret_plain")]
    pub username: Option<String>,
    #[serde(deserialize_with = "de::secret")]
    pub password: Option<Secret>,
    /// Repository prefix ending with `/`, e.g. `"ghcr/"`: a request for
    /// `ghcr/foo/bar` goes to this upstream as `foo/bar`.
    #[serde(deserialize_with = "de::opt_prefix")]
    pub prefix: Option<String>,
    /// Repository globs (as the upstream names them) this upstream may serve; empty = any.
    #[serde(deserialize_with = "de::strings")]
    pub allow: Vec<String>,
    /// Repository globs this upstream must not serve; checked before `allow`.
    #[serde(deserialize_with = "de::strings")]
    pub deny: Vec<String>,
    /// `proxy.cooldown` for this upstream; `None` = `proxy.cooldown`.
    #[serde(deserialize_with = "de::opt_duration")]
    pub cooldown: Option<Duration>,
}

impl Default for Config {
    /// A plain private registry with every default (no proxy).
    fn default() -> Self {
        Config {
            version: "0.1".into(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            proxy: ProxyConfig::default(),
            redis: None,
            ui: UiConfig::default(),
            notifications: NotificationsConfig::default(),
        }
    }
}

impl Config {
    /// What `stevedore` serves with no configuration file: every default,
    /// mirroring Docker Hub.
    pub fn default_mirror() -> Config {
        let mut config = Config::default();
        config.proxy.remoteurl = Some(DOCKER_HUB_URL.to_string());
        config
    }

    /// Parses a configuration file's text; absent keys take their defaults,
    /// and no `proxy` section means a plain private registry. No environment
    /// overlay. The result is validated.
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigError> {
        let mut tree = parse_tree(text)?;
        schema::normalize(&mut tree);
        schema::check(&tree)?;
        let config = de::read(&tree)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the file at `path` (or starts from [`Config::default_mirror`]
    /// when `None`), applies the `REGISTRY_*` variables of `env`, and
    /// validates the result.
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        let mut tree = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                parse_tree(&text)?
            }
            None => default_mirror_tree(),
        };
        schema::normalize(&mut tree);
        // Check the file alone first, so its mistakes are not blamed on env.
        schema::check(&tree)?;
        let set_by_env = env::overlay(&mut tree, env.vars())?;
        schema::normalize(&mut tree);
        let result = schema::check(&tree)
            .and_then(|()| de::read(&tree))
            .and_then(|config| config.validate().map(|()| config));
        result.map_err(|e| env::attribute(e, &set_by_env))
    }

    /// Checks values and their combinations; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// Whether any upstream is configured.
    pub fn proxy_enabled(&self) -> bool {
        self.proxy.remoteurl.is_some() || !self.proxy.upstreams.is_empty()
    }
}

fn parse_tree(text: &str) -> Result<Value, ConfigError> {
    let mut tree: Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Yaml {
        message: e.to_string(),
    })?;
    tree.apply_merge().map_err(|e| ConfigError::Yaml {
        message: e.to_string(),
    })?;
    Ok(tree)
}

fn default_mirror_tree() -> Value {
    let mut proxy = serde_yaml_ng::Mapping::new();
    proxy.insert("remoteurl".into(), DOCKER_HUB_URL.into());
    let mut root = serde_yaml_ng::Mapping::new();
    root.insert("proxy".into(), Value::Mapping(proxy));
    Value::Mapping(root)
}

/// Where the `REGISTRY_*` overlay comes from; lets tests avoid `set_var`.
pub trait EnvSource {
    /// All variables (only names starting with `REGISTRY_` are used).
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment. Variables that are not valid UTF-8 are skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

/// An empty environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl EnvSource for NoEnv {
    fn vars(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl EnvSource for Vec<(String, String)> {
    fn vars(&self) -> Vec<(String, String)> {
        self.clone()
    }
}

impl EnvSource for HashMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl EnvSource for [(&str, &str)] {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn vars(&self) -> Vec<(String, String)> {
        self.as_slice().vars()
    }
}
