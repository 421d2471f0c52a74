//! stevedore: a container registry whose main job is a pull-through caching mirror.
//!
//! ```text
//! http/      accept loop, routing (Endpoint::parse), handlers, debug listener   ← only hyper types
//!   ↓        auth/ (htpasswd, bearer tokens, policy) decides each request before its handler
//! mirror/    scope (local or which upstream), cache hits, single-flight fetches, stale serving,
//!            background tag revalidation (upstream/ adds breaker, offline switch, request cap),
//!            warm lists and the cooldown, on those same paths
//!   ↓
//! registry   the API's operations on local content:   lifecycle/  start-up recovery, eviction,
//!            uploads, manifests, links, listings                  gc, verify (App or a command
//!   ↓                                                     ↓       starts them; no registry)
//! depot      the blob store, index and cache, with what registry and lifecycle share: the lock
//!   ↓        that keeps removals and pushes apart, access times, the "proxied content grew" signal
//! storage/   index (sled)   cache (moka, + Redis)   upstream/ (the only network I/O to upstreams)
//!   ↓
//! BlobBackend (storage/backend.rs): where committed blobs live; FsBackend today
//! ```
//! (`clock`, `error`, `metrics`, `oci/` and `config/` are used by every layer; `oci/image_list`
//! is the one parser of the warm- and export-list format.)
//!
//! `storage::BlobStore` is the seam: it stages writes locally (a local tier in front of any
//! backend, which single-flight fetches read as the bytes land), commits only verified blobs to
//! its `BlobBackend`, and hands out reads as a local file or a byte stream; `http/` uses
//! `sendfile` only for a local file. No path to a blob leaves `storage/`.
//!
//! Beside the request path, over `registry`: `bundle/` (air-gap export/import as OCI
//! image-layout tars), run by the debug listener or by the CLI with the server stopped.
//!
//! Invariants: dependencies point down; registry and lifecycle are siblings (neither imports
//! the other; `App` wires them over one `Depot`), and `Registry`'s fields are private; only
//! `http/` sees hyper's Request and Response and states errors' facts as headers; only
//! `upstream/` talks to other registries; sled types never leave `index.rs`; every error becomes
//! a response in one place (`http::response::error`), through `RegistryError`; a committed blob
//! always hashes to its name; bodies are streamed, never held whole in memory (manifests,
//! capped at 4 MiB, are the exception); only the process holding the index lock (the server, at
//! start-up) sweeps `tmp/`, so maintenance commands beside it never touch its in-flight files;
//! nothing a request or a scrape does walks the whole index.

pub mod auth;
pub mod bundle;
pub mod cache;
pub mod clock;
pub mod config;
pub mod depot;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
pub mod http;
pub mod index;
pub mod keyfile;
pub mod lifecycle;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod mirror;
pub mod notify;
pub mod oci;
pub mod registry;
pub mod storage;
pub mod upstream;

use config::{Config, Secret};
use depot::Depot;
use metrics::Metrics;
use mirror::{Mirror, MirrorOptions, Upstream};
use registry::Registry;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use upstream::{ClientOptions, UpstreamClient};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("storage at {path}: {source}")]
    Storage {
        path: String,
        source: storage::StoreError,
    },
    #[error("index at {path}: {source}")]
    Index {
        path: String,
        source: index::IndexError,
    },
    #[error("upstream {name}: {source}")]
    Upstream {
        name: String,
        source: upstream::UpstreamError,
    },
    #[error("{0}")]
    Auth(#[from] auth::AuthSetupError),
    #[error("recovering the store: {0}")]
    Recovery(String),
    #[error("TLS: {0}")]
    Tls(#[from] http::tls::TlsError),
    #[error("{0}")]
    Redis(#[from] cache::RedisSetupError),
    #[error("upload secret at {path}: {source}")]
    Secret {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Notify(#[from] notify::NotifyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Everything a request handler can reach.
pub struct App {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    /// The content under the registry, which lifecycle tasks (eviction, gc) work on.
    pub depot: Arc<Depot>,
    pub mirror: Option<Arc<Mirror>>,
    /// Who may do what; `None` when no `auth` is configured (everyone may do everything).
    pub auth: Option<auth::Authenticator>,
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    pub prometheus_path: Option<String>,
    /// `http.headers`: added to every response of the main listener.
    pub extra_headers: ::http::HeaderMap,
    /// The main listener's TLS (certificate reloadable on SIGHUP), when `http.tls` is set.
    pub tls: Option<Arc<http::tls::ServerTls>>,
    /// Where `Location` headers point (`http.host`, `http.relativeurls`).
    pub urls: http::location::UrlBase,
    /// Signs upload URLs' state (`http.secret`).
    pub upload_key: http::location::UploadKey,
    /// Where events about pushes, pulls, mounts and deletes go (`notifications`).
    pub notifier: Arc<notify::Notifier>,
    /// The web console's sessions (`ui`).
    pub console: http::console::Console,
    /// The mirror dashboard's sampler (what each upstream's counters were at the last sample).
    pub history: std::sync::Mutex<history::Sampler>,
}

impl App {
    /// Opens the storage and index under the configured root, recovers from an unclean stop
    /// and sets up the upstreams: what the server does at start-up.
    pub async fn open(config: Config, metrics: Arc<Metrics>) -> Result<App, StartError> {
        App::open_as(config, metrics, true).await
    }

    /// Opens the index and storage for a maintenance command (`stevedore gc`) with the server
    /// stopped: the index is opened first, so a running server (which holds its lock) is found
    /// before any file is touched, and no start-up recovery runs.
    pub async fn open_offline(config: Config, metrics: Arc<Metrics>) -> Result<App, StartError> {
        App::open_as(config, metrics, false).await
    }

    async fn open_as(
        config: Config,
        metrics: Arc<Metrics>,
        server: bool,
    ) -> Result<App, StartError> {
        // First, so that a bad certificate fails start-up before any storage work.
        let tls = match &config.http.tls {
            Some(t) => Some(Arc::new(http::tls::ServerTls::load(&config.http, t)?)),
            None => None,
        };
        let root = config.storage.local_root().to_path_buf();
        let path = root.display().to_string();
        let storage_err = |source| StartError::Storage {
            path: path.clone(),
            source,
        };
        // The index lock says who owns the store: taken before anything under the root is
        // touched, so only its holder ever sweeps `tmp/`.
        let index_path = root.join("index");
        std::fs::create_dir_all(&root).map_err(|e| storage_err(e.into()))?;
        let index =
            Arc::new(
                index::Index::open(&index_path).map_err(|source| StartError::Index {
                    path: index_path.display().to_string(),
                    source,
                })?,
            );
        let auth = auth::Authenticator::from_config(&config.auth, &root, &index)?;
        let store = match &config.storage.s3 {
            None => storage::BlobStore::open(&root).await,
            Some(s3) => storage::BlobStore::open_s3(s3, &root).await.map_err(|e| {
                tracing::error!(bucket = %s3.bucket, error = %e, "the S3 bucket does not answer");
                e
            }),
        }
        .map_err(storage_err)?;
        let uploads = storage::Uploads::open(&root, store.clone())
            .await
            .map_err(storage_err)?;
        let upload_key = match (&config.http.secret, store.shared_secret().await) {
            (None, Ok(Some(shared))) => http::location::UploadKey::new(&shared),
            (None, Err(e)) => return Err(storage_err(e)),
            _ => upload_key(&config.http, &root)?,
        };
        let cache = cache::LayerCache::with_redis(
            config.storage.cache.blobdescriptorsize,
            layer_info_redis(&config)?,
        );
        if let Some(meta) = store.shared_meta() {
            meta.count_in(metrics.bucket_metadata_ops.clone());
        }
        let depot = Arc::new(Depot::new(store, index, cache, metrics.clone()));
        let registry = Arc::new(Registry::new(
            depot.clone(),
            uploads,
            registry::Options {
                delete_enabled: config.storage.delete.enabled,
                read_only: config.storage.maintenance.readonly.enabled,
                tag_refresh: config
                    .storage
                    .s3
                    .as_ref()
                    .map_or(std::time::Duration::ZERO, |s3| s3.tagrefresh),
            },
        ));
        let started = std::time::Instant::now();
        if server {
            lifecycle::recover::recover(&depot)
                .await
                .map_err(|e| StartError::Recovery(e.to_string()))?;
        }
        metrics
            .startup_duration
            .observe(started.elapsed().as_secs_f64());
        // Before the mirror, which sends its cache events through it.
        let notifier = Arc::new(if server {
            notify::Notifier::from_config(
                &config.notifications,
                notify::source_for(config.http.addr),
                &root,
                &metrics,
            )?
        } else {
            notify::Notifier::disabled()
        });
        let mirror = if config.proxy_enabled() {
            Some(Arc::new(build_mirror(
                &config,
                registry.clone(),
                metrics.clone(),
                notifier.clone(),
            )?))
        } else {
            None
        };
        let prometheus_path = config
            .http
            .debug
            .prometheus
            .enabled
            .then(|| config.http.debug.prometheus.path.clone());
        let mut extra_headers = extra_headers(&config.http.headers);
        // With peers, every answer names this process, so a replica finds itself among them.
        if let Some(peers) = mirror.as_ref().and_then(|m| m.peers())
            && let Ok(v) = ::http::HeaderValue::try_from(peers.instance())
        {
            extra_headers.insert(upstream::peers::INSTANCE_HEADER, v);
        }
        Ok(App {
            access_log: !config.log.accesslog.disabled,
            prometheus_path,
            extra_headers,
            tls,
            urls: http::location::UrlBase::from_config(&config.http),
            upload_key,
            notifier,
            console: http::console::Console::new(&config.ui),
            history: Default::default(),
            config: Arc::new(config),
            registry,
            depot,
            mirror,
            auth,
            metrics,
        })
    }

    /// Sets the storage gauges from the index's running totals: O(1), whatever the cache size.
    pub fn refresh_gauges(&self) {
        self.notifier.refresh_gauges();
        for origin in [index::Origin::Local, index::Origin::Proxy] {
            let (n, bytes) = self.depot.index.totals(origin);
            self.metrics
                .storage_blobs
                .with_label_values(&[origin.as_str()])
                .set(n as i64);
            self.metrics
                .storage_bytes
                .with_label_values(&[origin.as_str()])
                .set(bytes as i64);
        }
    }

    /// Runs a garbage collection now, sparing blobs being fetched.
    pub async fn gc(
        &self,
        options: &lifecycle::GcOptions,
    ) -> Result<lifecycle::GcReport, error::RegistryError> {
        let mirror = self.mirror.clone();
        lifecycle::gc::collect(&self.depot, options, &move |d: &oci::Digest| {
            mirror.as_ref().is_some_and(|m| m.fetching(d))
        })
        .await
    }

    /// Whether the storage accepts writes (always ready when read-only).
    pub async fn ready(&self) -> Result<(), String> {
        if self.config.storage.maintenance.readonly.enabled {
            return Ok(());
        }
        let w = self.depot.store.writer().await.map_err(|e| e.to_string())?;
        drop(w);
        Ok(())
    }
}

/// The Redis tier of the layer-info cache, when `storage.cache.blobdescriptor` is `redis`.
fn layer_info_redis(config: &Config) -> Result<Option<cache::RedisLayerInfo>, StartError> {
    match (&config.redis, config.storage.cache.blobdescriptor.as_str()) {
        (Some(r), "redis") => {
            tracing::info!(addr = %r.addr, db = r.db, "layer info is kept in redis too");
            if r.pool.maxidle > 0 || !r.pool.idletimeout.is_zero() {
                tracing::info!(
                    "redis.pool.maxidle and redis.pool.idletimeout have no effect: one multiplexed connection is used"
                );
            }
            Ok(Some(cache::RedisLayerInfo::new(r)?))
        }
        (Some(r), _) => {
            tracing::info!(
                addr = %r.addr,
                "the redis section is unused: storage.cache.blobdescriptor is not \"redis\""
            );
            Ok(None)
        }
        (None, _) => Ok(None),
    }
}

/// `http.secret`, or a random key generated once and kept in `<root>/http-secret`, so that
/// upload URLs survive a restart. (With `storage.s3` and no `http.secret`, the key is kept in
/// the bucket instead, shared by every replica: `BlobStore::shared_secret`.)
fn upload_key(
    http: &config::HttpConfig,
    root: &std::path::Path,
) -> Result<http::location::UploadKey, StartError> {
    if let Some(s) = &http.secret {
        return Ok(http::location::UploadKey::new(s.expose().as_bytes()));
    }
    let path = root.join("http-secret");
    let (key, created) = keyfile::read_or_create(
        &path,
        |k| k.len() >= 32,
        || {
            Ok([uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
                .iter()
                .flat_map(|u| u.as_bytes().to_vec())
                .collect())
        },
    )
    .map_err(|source| StartError::Secret {
        path: path.display().to_string(),
        source,
    })?;
    if !created {
        return Ok(http::location::UploadKey::new(&key));
    }
    tracing::warn!(
        path = %path.display(),
        "http.secret is not set: upload URLs are signed with a random key kept in the storage root; replicas behind one load balancer must share one http.secret"
    );
    Ok(http::location::UploadKey::new(&key))
}

/// `http.headers` as a header map; names and values were validated with the configuration.
fn extra_headers(headers: &std::collections::BTreeMap<String, Vec<String>>) -> ::http::HeaderMap {
    let mut map = ::http::HeaderMap::new();
    for (name, values) in headers {
        let Ok(name) = ::http::HeaderName::try_from(name.as_str()) else {
            continue;
        };
        for v in values {
            if let Ok(v) = ::http::HeaderValue::try_from(v.as_str()) {
                map.append(name.clone(), v);
            }
        }
    }
    map
}

/// The host (and port) of a URL, lowercased.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

fn build_mirror(
    config: &Config,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    notifier: Arc<notify::Notifier>,
) -> Result<Mirror, StartError> {
    let p = &config.proxy;
    let offline = Arc::new(std::sync::atomic::AtomicBool::new(p.offline));
    let opts = || ClientOptions {
        timeout: p.timeout,
        connect_timeout: p.connecttimeout,
        stall_timeout: p.stalltimeout,
        ca_file: p.cafile.clone(),
        max_requests: usize::try_from(p.maxfetches).unwrap_or(usize::MAX),
        breaker: upstream::BreakerOptions {
            threshold: u32::try_from(p.breakerthreshold).unwrap_or(u32::MAX),
            max_backoff: p.breakermaxbackoff,
        },
        offline: offline.clone(),
        ns: None,
        peer: None,
        notifier: notifier.clone(),
    };
    let client = |name: &str, url: &str, user: &Option<String>, pass: &Option<Secret>| {
        let creds = match (user, pass) {
            (Some(u), Some(pw)) => Some((u.clone(), pw.clone())),
            _ => None,
        };
        metrics.init_upstream(name, &upstream::operation_labels());
        let opts = ClientOptions {
            ns: forwarded_ns(name, url),
            ..opts()
        };
        UpstreamClient::new(name, url, creds, opts, metrics.clone())
            .map(Arc::new)
            .map_err(|source| StartError::Upstream {
                name: name.to_owned(),
                source,
            })
    };
    let default = match &p.remoteurl {
        None => None,
        Some(url) => {
            let host = url_host(url);
            let docker_hub =
                ["registry-1.docker.io", "index.docker.io", "docker.io"].contains(&host.as_str());
            let (name, aliases) = if docker_hub {
                (
                    "docker.io".to_owned(),
                    vec![
                        "registry-1.docker.io".to_owned(),
                        "index.docker.io".to_owned(),
                    ],
                )
            } else {
                (host, Vec::new())
            };
            Some(Arc::new(Upstream {
                client: client(&name, url, &p.username, &p.password)?,
                name,
                aliases,
                prefix: None,
                policy: mirror::RepoPolicy {
                    key: "proxy".to_owned(),
                    allow: p.allow.clone(),
                    deny: p.deny.clone(),
                },
                cooldown: p.cooldown,
            }))
        }
    };
    let mut upstreams = Vec::new();
    for (i, u) in p.upstreams.iter().enumerate() {
        upstreams.push(Arc::new(Upstream {
            client: client(&u.name, &u.remoteurl, &u.username, &u.password)?,
            name: u.name.to_ascii_lowercase(),
            aliases: vec![url_host(&u.remoteurl)],
            prefix: u.prefix.clone(),
            policy: mirror::RepoPolicy {
                key: format!("proxy.upstreams[{i}]"),
                allow: u.allow.clone(),
                deny: u.deny.clone(),
            },
            cooldown: u.cooldown.unwrap_or(p.cooldown),
        }));
    }
    let peers = if p.peers.enabled() {
        Some(peers(&p.peers, opts(), metrics.clone())?)
    } else {
        None
    };
    Ok(Mirror::new(
        registry,
        default,
        upstreams,
        MirrorOptions {
            tag_ttl: p.tagttl,
            revalidate_timeout: p.revalidatetimeout,
            local_prefixes: p.localprefixes.clone(),
            offline,
            policy: mirror::PolicyOptions {
                audit: p.policy.mode == config::PolicyMode::Audit,
                contact: p.policy.contact.clone(),
            },
            peers,
            notifier,
        },
        metrics,
    ))
}

/// The `?ns=` an upstream is asked with: its name, when that names a registry host other
/// than the URL's (a node tier's `ghcr.io` upstream served by a regional stevedore), so the
/// mirror up the chain picks its own `ghcr.io` upstream. Never for Docker Hub itself.
fn forwarded_ns(name: &str, url: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    let host = url_host(url);
    let hub = ["registry-1.docker.io", "index.docker.io", "docker.io"].contains(&host.as_str());
    let registry_like = name.contains('.') || name.contains(':') || name == "localhost";
    (registry_like && name != host && !hub).then_some(name)
}

/// `proxy.peers`: the replicas, reached with the upstream timeouts but no breaker (their
/// liveness is tracked by probes) and a larger request cap (one request per distinct miss).
fn peers(
    c: &config::PeersConfig,
    client: ClientOptions,
    metrics: Arc<Metrics>,
) -> Result<Arc<upstream::peers::Peers>, StartError> {
    let credentials = match (&c.username, &c.password) {
        (Some(u), Some(pw)) => Some((u.clone(), pw.clone())),
        _ => None,
    };
    let opts = upstream::peers::PeerOptions {
        static_peers: c.static_peers.clone(),
        dns: c.dns.clone(),
        port: u16::try_from(c.port).unwrap_or(5000),
        self_addr: c.self_addr.clone(),
        refresh: c.refresh,
        probe_interval: c.probeinterval,
        probe_timeout: c.probetimeout,
        client: ClientOptions {
            connect_timeout: c.probetimeout,
            max_requests: 256,
            // A peer's failures are not the upstream's: no upstream.error events for them.
            notifier: Arc::new(notify::Notifier::disabled()),
            breaker: upstream::BreakerOptions {
                threshold: 0,
                ..upstream::BreakerOptions::default()
            },
            ..client
        },
        credentials,
    };
    upstream::peers::Peers::new(opts, metrics).map_err(|source| StartError::Upstream {
        name: "proxy.peers".to_owned(),
        source,
    })
}

/// Runs the registry on already-bound listeners until `shutdown` resolves.
pub async fn run(
    app: App,
    listener: TcpListener,
    debug_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Arc::new(app);
    http::init_endpoint_metrics(&app.metrics);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = debug_listener {
        tasks.spawn(http::debug::serve(l, app.clone(), stopped()));
    }
    let purging = app.config.storage.maintenance.uploadpurging.clone();
    if purging.enabled && !purging.interval.is_zero() {
        let app = app.clone();
        let stop = stopped();
        tasks.spawn(async move {
            let work = async {
                loop {
                    match app
                        .registry
                        .purge_uploads(purging.age, purging.dryrun)
                        .await
                    {
                        Ok(n) if n > 0 => tracing::info!(sessions = n, "upload purging done"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "upload purging failed"),
                    }
                    tokio::time::sleep(purging.interval).await;
                }
            };
            tokio::select! {
                () = work => {},
                () = stop => {},
            }
        });
    }
    if let Some(mirror) = app.mirror.clone() {
        let options = lifecycle::EvictOptions {
            max_size: app.config.proxy.maxsize,
            max_age: app.config.proxy.ttl,
            pinned: {
                let rules = mirror::pins::PinRules::new(&app.config.proxy.pin);
                (!rules.is_empty()).then(|| {
                    Arc::new(move |r: &oci::RepoName, t: &oci::Tag| {
                        rules.pins(r.as_str(), t.as_str())
                    }) as lifecycle::evict::Pinned
                })
            },
            notifier: app.notifier.clone(),
        };
        let depot = app.depot.clone();
        let stop = stopped();
        tasks.spawn(async move {
            lifecycle::evict::run(&depot, options, move |d| mirror.fetching(d), stop).await;
        });
    }
    if app.depot.store.bucket().is_some() {
        // The shared bucket: this replica's access records, and its turn at the job.
        let gc = &app.config.storage.maintenance.gc;
        let interval = gc.accessinterval.max(std::time::Duration::from_secs(1));
        tasks.spawn(maintenance::record_access(
            app.depot.clone(),
            interval,
            stopped(),
        ));
        if !gc.interval.is_zero() && !app.config.storage.maintenance.readonly.enabled {
            let options = maintenance::options(
                &app.config,
                maintenance::Job::Gc,
                false,
                None,
                maintenance::holder(&app.depot.store),
            );
            tasks.spawn(maintenance::periodic(
                app.depot.clone(),
                options,
                gc.interval,
                stopped(),
            ));
        }
    }
    if let Some(peers) = app.mirror.as_ref().and_then(|m| m.peers()).cloned() {
        tasks.spawn(peers.run(stopped()));
    }
    if let (Some(mirror), Some(file)) = (app.mirror.clone(), app.config.proxy.warm.file.clone()) {
        let interval = app.config.proxy.warm.interval;
        tasks.spawn(mirror::warm::schedule(mirror, file, interval, stopped()));
    }
    {
        // Access times reach the index every 30 s (and at shutdown), not on every read.
        let depot = app.depot.clone();
        let stop = stopped();
        tasks.spawn(async move {
            let work = async {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    if let Err(e) = depot.flush_access() {
                        tracing::warn!(error = %e, "writing access times failed");
                    }
                }
            };
            tokio::select! {
                () = work => {},
                () = stop => {},
            }
        });
    }
    if let Some(mirror) = app.mirror.clone() {
        // The dashboard's history: each upstream's counters, once a minute, into the index.
        let app = app.clone();
        let stop = stopped();
        tasks.spawn(async move {
            let upstreams = mirror.upstream_names();
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let work = async {
                loop {
                    tick.tick().await;
                    let now = clock::now_secs();
                    let sampled = app.history.lock().expect("history sampler").sample(
                        &app.metrics,
                        &app.depot.index,
                        &upstreams,
                        now,
                    );
                    if let Err(e) = sampled {
                        tracing::warn!(error = %e, "recording the dashboard's history failed");
                    }
                }
            };
            tokio::select! {
                () = work => {},
                () = stop => {},
            }
        });
    }
    let drain = app.config.http.draintimeout;
    let main = http::serve(listener, app.clone(), shutdown, drain);
    main.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // Events of the requests just drained are queued by now: flush them.
    app.notifier.shutdown(drain).await;
    if let Err(e) = app.depot.flush_access() {
        tracing::warn!(error = %e, "writing access times at shutdown failed");
    }
    if let Err(e) = app.depot.index.flush().await {
        tracing::warn!(error = %e, "index flush at shutdown failed");
    }
}
