//! Tests of the configuration loader: defaults, example files, key and value
//! errors, the environment overlay, validation and redaction.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::units::{parse_addr, parse_duration, parse_size};
use super::*;

fn err(text: &str) -> ConfigError {
    match Config::from_yaml_str(text) {
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        Err(e) => e,
    }
}

fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yml");
    std::fs::write(&path, text).expect("write config");
    let vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    Config::load(Some(&path), &vars)
}

fn env_err(text: &str, env: &[(&str, &str)]) -> ConfigError {
    match load_env(text, env) {
        Ok(c) => panic!("expected an error for env {env:?}, got {c:?}"),
        Err(e) => e,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------- defaults

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.version, "0.1");
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.log.formatter, LogFormat::Text);
    assert!(!c.log.accesslog.disabled);
    assert_eq!(c.storage.filesystem.rootdirectory, PathBuf::from("./data"));
    assert!(!c.storage.delete.enabled);
    let up = &c.storage.maintenance.uploadpurging;
    assert!(up.enabled && !up.dryrun);
    assert_eq!((up.age, up.interval), (secs(168 * 3600), secs(24 * 3600)));
    assert!(!c.storage.maintenance.readonly.enabled);
    assert_eq!(c.storage.cache.blobdescriptor, "inmemory");
    assert_eq!(c.storage.cache.blobdescriptorsize, 10_000);
    assert_eq!(c.http.addr, addr("0.0.0.0:5000"));
    assert_eq!((c.http.net.as_str(), c.http.prefix.as_str()), ("tcp", ""));
    assert_eq!(c.http.draintimeout, secs(10));
    assert_eq!(c.http.debug.addr, None);
    assert!(!c.http.debug.prometheus.enabled);
    assert_eq!(c.http.debug.prometheus.path, "/metrics");
    assert!(c.http.tls.is_none() && c.http.secret.is_none() && c.http.host.is_none());
    let l = &c.http.limits;
    assert_eq!((l.maxconns, l.maxconnsperclient, l.burst), (4096, 256, 0));
    assert_eq!(l.requestspersecond, 0.0);
    assert_eq!((l.headertimeout, l.bodytimeout), (secs(30), secs(60)));
    assert_eq!(l.idletimeout, secs(300));
    assert_eq!(
        (l.maxheaderbytes, l.maxheaders, l.maxstreams),
        (64 * 1024, 100, 128)
    );
    assert_eq!(c.auth, AuthConfig::default());
    assert_eq!(c.proxy.remoteurl, None);
    assert_eq!(c.proxy.ttl, secs(168 * 3600));
    assert_eq!(c.proxy.tagttl, secs(60));
    assert_eq!(c.proxy.timeout, secs(30));
    assert_eq!(c.proxy.stalltimeout, secs(60));
    assert_eq!(
        (c.proxy.connecttimeout, c.proxy.revalidatetimeout),
        (secs(5), secs(2))
    );
    assert!(!c.proxy.offline);
    assert_eq!((c.proxy.maxfetches, c.proxy.breakerthreshold), (16, 3));
    assert_eq!(c.proxy.breakermaxbackoff, secs(60));
    assert_eq!(c.proxy.maxsize, None);
    assert!(!c.proxy_enabled());
    c.validate().expect("defaults are valid");
}

#[test]
fn default_mirror_is_a_docker_hub_mirror() {
    let m = Config::default_mirror();
    assert_eq!(
        m.proxy.remoteurl.as_deref(),
        Some("https://registry-1.docker.io")
    );
    assert!(m.proxy_enabled());
    let mut plain = m.clone();
    plain.proxy.remoteurl = None;
    assert_eq!(plain, Config::default());
    assert_eq!(Config::load(None, &NoEnv).expect("load"), m);
}

#[test]
fn a_file_without_proxy_is_a_private_registry() {
    let c = Config::from_yaml_str("version: 0.1\nhttp:\n  addr: :6000\n").expect("parse");
    assert_eq!(c.proxy.remoteurl, None);
    assert!(!c.proxy_enabled());
    assert_eq!(c.http.addr, addr("0.0.0.0:6000"));
    assert_eq!(Config::from_yaml_str("").expect("empty"), Config::default());
    assert_eq!(
        Config::from_yaml_str("proxy:\n  remoteurl: \"\"\n").expect("empty url"),
        Config::default()
    );
}

#[test]
fn upstreams_alone_enable_the_proxy() {
    let c = Config::from_yaml_str(
        "proxy:\n  upstreams:\n    - name: ghcr.io\n      remoteurl: https://ghcr.io/\n      prefix: ghcr\n",
    )
    .expect("parse");
    assert!(c.proxy_enabled());
    assert_eq!(c.proxy.upstreams[0].remoteurl, "https://ghcr.io");
    assert_eq!(c.proxy.upstreams[0].prefix.as_deref(), Some("ghcr/"));
}

// ---------------------------------------------------------- example files

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            if let Err(e) = Config::load(Some(&path), &NoEnv) {
                panic!("{} does not load: {e}", path.display());
            }
            seen.push(path.file_name().unwrap_or_default().to_owned());
        }
    }
    for expected in ["default.yml", "registry.yml", "mirror.yml", "htpasswd.yml"] {
        assert!(
            seen.iter().any(|s| s == expected),
            "config/{expected} missing"
        );
    }
}

#[test]
fn default_yml_is_exactly_the_builtin_default() {
    let c = Config::load(Some(&example("default.yml")), &NoEnv).expect("load");
    assert_eq!(c, Config::default_mirror());
}

/// The keys `config/default.yml` shows, set or commented out (`# key: value`
/// at any depth), as dotted paths; the keys of list items are under the list.
fn documented_keys(text: &str) -> std::collections::BTreeSet<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut keys = std::collections::BTreeSet::new();
    for line in text.lines() {
        let body = line.trim_start();
        let mut depth = line.len() - body.len();
        let body = body.strip_prefix("# ").unwrap_or(body);
        let mut rest = body.trim_start();
        depth += body.len() - rest.len();
        if let Some(item) = rest.strip_prefix("- ") {
            rest = item;
            depth += 2;
        }
        let Some((key, after)) = rest.split_once(':') else {
            continue;
        };
        if key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_alphanumeric())
            || !(after.is_empty() || after.starts_with(' '))
        {
            continue;
        }
        while stack.last().is_some_and(|(d, _)| *d >= depth) {
            stack.pop();
        }
        stack.push((depth, key.to_string()));
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        keys.insert(path.join("."));
    }
    keys
}

#[test]
fn default_yml_documents_every_key_the_structs_read() {
    let text = std::fs::read_to_string(example("default.yml")).expect("default.yml");
    let documented = documented_keys(&text);
    let keys = schema::keys();
    assert!(keys.len() > 100, "tracing found only {keys:?}");
    let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "config/default.yml does not document {missing:?}"
    );
}

#[test]
fn the_schema_is_traced_from_the_structs() {
    let keys = schema::keys();
    for key in [
        "version",
        "log.fields",
        "http.tls.clientcas",
        "redis.pool.maxactive",
        "auth.policy.rules.repository",
        "proxy.upstreams.password",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
    }
    assert!(!keys.iter().any(|k| k.starts_with("health")), "{keys:?}");
}

#[test]
fn registry_yml_is_a_private_registry_with_metrics() {
    let c = Config::load(Some(&example("registry.yml")), &NoEnv).expect("load");
    assert!(!c.proxy_enabled());
    assert!(c.storage.delete.enabled);
    assert_eq!(c.http.addr, addr("0.0.0.0:5000"));
    assert_eq!(c.http.debug.addr, Some(addr("0.0.0.0:5001")));
    assert!(c.http.debug.prometheus.enabled);
    assert_eq!(
        c.log.fields.get("service").map(String::as_str),
        Some("registry")
    );
    assert_eq!(
        c.http.headers.get("X-Content-Type-Options"),
        Some(&vec!["nosniff".to_string()])
    );
}

#[test]
fn mirror_yml_has_upstreams_and_bounds() {
    let c = Config::load(Some(&example("mirror.yml")), &NoEnv).expect("load");
    assert_eq!(c.proxy.maxsize, Some(200 << 30));
    assert_eq!(c.proxy.tagttl, secs(300));
    assert_eq!(c.proxy.localprefixes, vec!["local/", "team/"]);
    let names: Vec<_> = c.proxy.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["ghcr.io", "quay.io", "registry.k8s.io"]);
    assert_eq!(c.proxy.upstreams[2].prefix.as_deref(), Some("k8s/"));
    assert_eq!(c.log.formatter, LogFormat::Json);

    // The credentials the file's comments describe, from the environment.
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = dir.path().join("hub");
    let ghcr = dir.path().join("ghcr");
    std::fs::write(&hub, "hub-token\n").expect("write");
    std::fs::write(&ghcr, "ghcr-token\r\n").expect("write");
    let env = vec![
        ("REGISTRY_PROXY_USERNAME".to_string(), "hubuser".to_string()),
        (
            "REGISTRY_PROXY_PASSWORD_FILE".to_string(),
            hub.display().to_string(),
        ),
        (
            "REGISTRY_PROXY_UPSTREAMS_0_USERNAME".to_string(),
            "gh".to_string(),
        ),
        (
            "REGISTRY_PROXY_UPSTREAMS_0_PASSWORD_FILE".to_string(),
            ghcr.display().to_string(),
        ),
    ];
    let c = Config::load(Some(&example("mirror.yml")), &env).expect("load with env");
    assert_eq!(c.proxy.username.as_deref(), Some("hubuser"));
    assert_eq!(c.proxy.password, Some("hub-token".into()));
    assert_eq!(c.proxy.upstreams[0].username.as_deref(), Some("gh"));
    assert_eq!(c.proxy.upstreams[0].password, Some("ghcr-token".into()));
    assert_eq!(c.proxy.upstreams[1].password, None);
}

#[test]
fn htpasswd_yml_has_auth_and_tls() {
    let c = Config::load(Some(&example("htpasswd.yml")), &NoEnv).expect("load");
    let h = c.auth.htpasswd.expect("htpasswd");
    assert_eq!(h.realm, "Registry Realm");
    assert_eq!(h.path, PathBuf::from("/auth/htpasswd"));
    let tls = c.http.tls.expect("tls");
    assert_eq!(tls.certificate, PathBuf::from("/certs/domain.crt"));
    assert_eq!(tls.minimumtls.as_deref(), Some("tls1.2"));
}

#[test]
fn the_registry_image_stock_config_loads() {
    let stock = "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";
    let c = Config::from_yaml_str(stock).expect("stock config");
    assert_eq!(
        c.storage.filesystem.rootdirectory,
        PathBuf::from("/var/lib/registry")
    );
}

// ------------------------------------------------------------- key errors

#[test]
fn unknown_key_is_named_with_a_suggestion() {
    let e = err("http:\n  adr: :5000\n");
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, suggestion }
            if key == "http.adr" && suggestion.as_deref() == Some("http.addr")),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("unknown configuration key \"http.adr\""),
        "{msg}"
    );
    assert!(msg.contains("did you mean \"http.addr\""), "{msg}");

    let e = err("storag:\n  delete: {enabled: true}\n");
    assert_eq!(e.key(), Some("storag"));
    assert!(e.to_string().contains("\"storage\""), "{e}");

    let e = err("frobnicate: 1\n");
    assert!(
        matches!(
            &e,
            ConfigError::UnknownKey {
                suggestion: None,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn unknown_key_in_a_list_entry_names_the_index() {
    let e = err(
        "proxy:\n  upstreams:\n    - name: a\n      remoteurl: https://a\n    - name: b\n      remoteurll: https://b\n",
    );
    assert_eq!(e.key(), Some("proxy.upstreams[1].remoteurll"));
    assert!(
        e.to_string().contains("proxy.upstreams[1].remoteurl\""),
        "{e}"
    );
}

#[test]
fn keys_are_case_sensitive_like_distribution() {
    let e = err("http:\n  Addr: :5000\n");
    assert_eq!(e.key(), Some("http.Addr"));
    assert!(e.to_string().contains("did you mean \"http.addr\""), "{e}");
}

#[test]
fn distribution_keys_stevedore_lacks_are_unsupported() {
    for (yaml, key) in [
        ("storage:\n  azure:\n    accountname: x\n", "storage.azure"),
        ("storage:\n  gcs:\n    bucket: x\n", "storage.gcs"),
        ("storage:\n  inmemory: {x: 1}\n", "storage.inmemory"),
        ("reporting:\n  bugsnag:\n    apikey: x\n", "reporting"),
        ("middleware:\n  registry:\n    - name: x\n", "middleware"),
        ("validation:\n  disabled: true\n", "validation"),
        (
            "compatibility:\n  schema1:\n    enabled: true\n",
            "compatibility",
        ),
        ("loglevel: debug\n", "loglevel"),
        ("log:\n  hooks:\n    - type: mail\n", "log.hooks"),
        (
            "http:\n  tls:\n    letsencrypt:\n      email: a@b\n",
            "http.tls.letsencrypt",
        ),
        ("auth:\n  silly:\n    realm: x\n", "auth.silly"),
        ("health:\n  http:\n    - uri: http://x\n", "health.http"),
        ("catalog:\n  maxentries: 5\n", "catalog"),
    ] {
        let e = err(yaml);
        assert!(
            matches!(&e, ConfigError::Unsupported { key: k, .. } if k == key),
            "{yaml}: {e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "configuration key \"{key}\" is not supported by stevedore yet"
            )),
            "{msg}"
        );
    }
    assert!(err("loglevel: debug\n").to_string().contains("log.level"));
}

#[test]
fn unsupported_keys_that_configure_nothing_are_accepted() {
    let c = Config::from_yaml_str(
        "compatibility:\n  schema1:\n    enabled: false\nnotifications: {}\nlog:\n  reportcaller: false\n",
    )
    .expect("inert");
    assert_eq!(c, Config::default());
    let c = Config::from_yaml_str(
        "storage:\n  filesystem:\n    maxthreads: 100\n  tag:\n    concurrencylimit: 8\n",
    )
    .expect("ignored keys");
    assert_eq!(c, Config::default());
}

#[test]
fn log_fields_are_kept() {
    let c = Config::from_yaml_str(
        "log:\n  level: WARNING\n  formatter: logstash\n  fields:\n    service: registry\n    environment: staging\n    shard: 3\n",
    )
    .expect("parse");
    assert_eq!(c.log.level, LogLevel::Warn);
    assert_eq!(c.log.formatter, LogFormat::Json);
    assert_eq!(c.log.fields.len(), 3);
    assert_eq!(c.log.fields["environment"], "staging");
    assert_eq!(c.log.fields["shard"], "3");
}

#[test]
fn short_storage_form_is_accepted() {
    let c = Config::from_yaml_str("storage: filesystem\n").expect("parse");
    assert_eq!(c.storage, StorageConfig::default());
    let e = err("storage: s3\n");
    assert_eq!(e.key(), Some("storage.s3.region"));
    let e = err("storage:\n  inmemory:\n");
    assert_eq!(e.key(), Some("storage.inmemory"));
    let e = err("auth: silly\n");
    assert_eq!(e.key(), Some("auth.silly"));
}

#[test]
fn yaml_syntax_errors_are_reported() {
    let e = err("http:\n  addr: [unclosed\n");
    assert!(matches!(e, ConfigError::Yaml { .. }), "{e:?}");
    assert!(e.to_string().contains("line"), "{e}");
    let e = err("- just\n- a list\n");
    assert!(e.to_string().contains("mapping"), "{e}");
}

#[test]
fn missing_file_is_named() {
    let e = Config::load(Some(Path::new("/nonexistent/stevedore.yml")), &NoEnv)
        .expect_err("missing file");
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/stevedore.yml"), "{e}");
}

// ----------------------------------------------------------- value errors

fn assert_value_error(yaml: &str, key: &str, value: &str) {
    let e = err(yaml);
    assert_eq!(e.key(), Some(key), "{yaml}: {e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("\"{key}\"")), "{msg}");
    assert!(
        msg.contains(value),
        "{yaml}: message {msg:?} lacks {value:?}"
    );
}

#[test]
fn bad_values_name_the_key_and_the_value() {
    assert_value_error("http:\n  addr: nonsense\n", "http.addr", "\"nonsense\"");
    assert_value_error(
        "http:\n  addr: example.com:5000\n",
        "http.addr",
        "example.com",
    );
    assert_value_error("http:\n  addr: :99999\n", "http.addr", ":99999");
    assert_value_error("http:\n  addr: {a: 1}\n", "http.addr", "mapping");
    assert_value_error(
        "http:\n  draintimeout: 10 parsecs\n",
        "http.draintimeout",
        "10 parsecs",
    );
    assert_value_error("proxy:\n  ttl: -1h\n", "proxy.ttl", "-1h");
    assert_value_error("proxy:\n  maxsize: 12XB\n", "proxy.maxsize", "12XB");
    assert_value_error("proxy:\n  maxsize: lots\n", "proxy.maxsize", "lots");
    assert_value_error(
        "proxy:\n  remoteurl: ftp://x\n",
        "proxy.remoteurl",
        "ftp://x",
    );
    assert_value_error(
        "proxy:\n  remoteurl: https://\n",
        "proxy.remoteurl",
        "https://",
    );
    assert_value_error(
        "storage:\n  delete:\n    enabled: maybe\n",
        "storage.delete.enabled",
        "maybe",
    );
    assert_value_error("log:\n  level: loud\n", "log.level", "loud");
    assert_value_error("log:\n  formatter: xml\n", "log.formatter", "xml");
    assert_value_error("version: 0.2\n", "version", "0.2");
    assert_value_error(
        "http:\n  host: registry.example.com\n",
        "http.host",
        "registry.example.com",
    );
    assert_value_error(
        "http:\n  debug:\n    prometheus:\n      path: metrics\n",
        "http.debug.prometheus.path",
        "metrics",
    );
    assert_value_error(
        "storage:\n  cache:\n    blobdescriptorsize: -5\n",
        "storage.cache.blobdescriptorsize",
        "-5",
    );
    assert_value_error(
        "http:\n  tls:\n    certificate: /c\n    key: /k\n    minimumtls: tls1.0\n",
        "http.tls.minimumtls",
        "tls1.0",
    );
    assert_value_error("http: 5000\n", "http", "5000");
}

#[test]
fn credentials_in_urls_are_rejected_and_not_echoed() {
    let e = err("proxy:\n  remoteurl: https://user:hunter2@registry.example\n");
    assert_eq!(e.key(), Some("proxy.remoteurl"));
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("username"), "{e}");
}

#[test]
fn scalar_strings_accept_numbers_and_version_defaults() {
    let c = Config::from_yaml_str(
        "proxy:\n  remoteurl: https://r.example\n  username: 1234\n  password: true\n",
    )
    .expect("parse");
    assert_eq!(c.proxy.username.as_deref(), Some("1234"));
    assert_eq!(c.proxy.password, Some("true".into()));
    let c = Config::from_yaml_str("version: \"0.1\"\n").expect("quoted version");
    assert_eq!(c.version, "0.1");
}

#[test]
fn addresses_accept_distribution_forms() {
    assert_eq!(parse_addr(":5000"), Ok(addr("0.0.0.0:5000")));
    assert_eq!(parse_addr("127.0.0.1:80"), Ok(addr("127.0.0.1:80")));
    assert_eq!(parse_addr("[::]:5000"), Ok(addr("[::]:5000")));
    assert_eq!(parse_addr("localhost:5001"), Ok(addr("127.0.0.1:5001")));
    assert!(parse_addr("5000").is_err());
    assert!(parse_addr(":").is_err());
    assert!(parse_addr(":http").is_err());
    let c = Config::from_yaml_str("http:\n  addr: '[::1]:5000'\n").expect("v6");
    assert_eq!(c.http.addr, addr("[::1]:5000"));
}

#[test]
fn durations_follow_go_syntax_plus_seconds() {
    assert_eq!(parse_duration("168h"), Ok(secs(168 * 3600)));
    assert_eq!(parse_duration("10s"), Ok(secs(10)));
    assert_eq!(parse_duration("1m30s"), Ok(secs(90)));
    assert_eq!(parse_duration("1h2m3s"), Ok(secs(3723)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.5h"), Ok(secs(5400)));
    assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
    assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
    assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("45"), Ok(secs(45)));
    for bad in [
        "",
        "h",
        "10",
        "-5s",
        "5d",
        "5 s",
        "1.2.3s",
        "s10",
        "99999999999999999999h",
    ] {
        if bad == "10" {
            continue; // bare integers are seconds
        }
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
    // Integers in YAML are seconds, not Go's nanoseconds.
    let c = Config::from_yaml_str("proxy:\n  tagttl: 90\n  ttl: 0\n").expect("parse");
    assert_eq!(c.proxy.tagttl, secs(90));
    assert_eq!(c.proxy.ttl, Duration::ZERO);
}

#[test]
fn sizes_are_explicit_about_powers() {
    assert_eq!(parse_size("1048576"), Ok(1_048_576));
    assert_eq!(parse_size("200GiB"), Ok(200 << 30));
    assert_eq!(parse_size("200G"), Ok(200 << 30));
    assert_eq!(parse_size("200gi"), Ok(200 << 30));
    assert_eq!(parse_size("500MB"), Ok(500_000_000));
    assert_eq!(parse_size("500mb"), Ok(500_000_000));
    assert_eq!(parse_size("1TiB"), Ok(1 << 40));
    assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
    assert_eq!(parse_size("1.5 KiB"), Ok(1536));
    assert_eq!(parse_size("10B"), Ok(10));
    assert_eq!(parse_size("2k"), Ok(2048));
    for bad in ["", "GiB", "12XB", "1.5", "-1G", "1e9", "99999999PiB"] {
        assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
    }
    let c = Config::from_yaml_str("proxy:\n  maxsize: 4096\n").expect("parse");
    assert_eq!(c.proxy.maxsize, Some(4096));
}

// -------------------------------------------------------------- validation

#[test]
fn tls_needs_certificate_and_key() {
    let e = err("http:\n  tls:\n    certificate: /certs/c.crt\n");
    assert!(
        matches!(&e, ConfigError::Missing { key, .. } if key == "http.tls.key"),
        "{e:?}"
    );
    let e = err("http:\n  tls:\n    key: /certs/c.key\n");
    assert_eq!(e.key(), Some("http.tls.certificate"));
    let e = err("http:\n  tls:\n    clientcas: [/ca.pem]\n");
    assert_eq!(e.key(), Some("http.tls.certificate"));
    let c = Config::from_yaml_str(
        "http:\n  tls:\n    certificate: /c\n    key: /k\n    clientcas: /ca.pem\n",
    )
    .expect("both");
    assert_eq!(
        c.http.tls.expect("tls").clientcas,
        vec![PathBuf::from("/ca.pem")]
    );
    // An empty section is no TLS.
    assert!(
        Config::from_yaml_str("http:\n  tls: {}\n")
            .expect("empty tls")
            .http
            .tls
            .is_none()
    );
}

#[test]
fn only_one_auth_kind() {
    let e = err(
        "auth:\n  htpasswd:\n    realm: r\n    path: /p\n  token:\n    realm: https://a/token\n    service: s\n    issuer: i\n    rootcertbundle: /b\n",
    );
    assert!(
        matches!(&e, ConfigError::Conflict { first, second, .. } if first == "auth.htpasswd" && second == "auth.token"),
        "{e:?}"
    );
}

#[test]
fn auth_builtin_defaults_and_checks() {
    // `auth: builtin` alone selects it, with its defaults.
    let c = Config::from_yaml_str("auth: builtin\n").expect("builtin loads");
    let b = c.auth.builtin.expect("builtin");
    assert_eq!(
        (b.service.as_str(), b.issuer.as_str()),
        ("stevedore", "stevedore")
    );
    assert_eq!(b.expiration, Duration::from_secs(300));
    assert_eq!(b.firstadmin.username, "admin");
    let e = err("auth:\n  builtin: {}\n  htpasswd:\n    realm: r\n    path: /p\n");
    assert!(matches!(&e, ConfigError::Conflict { .. }), "{e:?}");
    let e = err("auth:\n  builtin:\n    realm: not-a-url\n");
    assert_eq!(e.key(), Some("auth.builtin.realm"));
    let e = err("auth:\n  builtin:\n    firstadmin:\n      password: x\n      passwordfile: /p\n");
    assert!(matches!(&e, ConfigError::Conflict { .. }), "{e:?}");
    let e = err("auth:\n  builtin:\n    expiration: 1s\n");
    assert_eq!(e.key(), Some("auth.builtin.expiration"));
    // auth.policy works with builtin too.
    Config::from_yaml_str("auth:\n  builtin: {}\n  policy:\n    anonymouspull: true\n")
        .expect("policy with builtin");
}

#[test]
fn auth_required_keys_are_named() {
    let e = err("auth:\n  htpasswd:\n    path: /auth/htpasswd\n");
    assert!(
        matches!(&e, ConfigError::Missing { key, .. } if key == "auth.htpasswd.realm"),
        "{e:?}"
    );
    let e = err("auth:\n  htpasswd:\n    realm: Registry\n");
    assert_eq!(e.key(), Some("auth.htpasswd.path"));
    let e = err("auth: htpasswd\n");
    assert_eq!(e.key(), Some("auth.htpasswd.realm"));
    let e = err(
        "auth:\n  token:\n    realm: https://auth/token\n    service: s\n    rootcertbundle: /b\n",
    );
    assert_eq!(e.key(), Some("auth.token.issuer"));
    assert!(
        e.to_string()
            .contains("missing required configuration key \"auth.token.issuer\"")
    );
    let c = Config::from_yaml_str("auth:\n  token:\n    realm: https://auth/token\n    service: s\n    issuer: i\n    rootcertbundle: /b\n    autoredirect: true\n")
        .expect("token");
    assert!(c.auth.token.expect("token").autoredirect);
}

#[test]
fn prometheus_needs_the_debug_listener() {
    let e = err("http:\n  debug:\n    prometheus:\n      enabled: true\n");
    let msg = e.to_string();
    assert!(msg.contains("http.debug.prometheus.enabled"), "{msg}");
    assert!(msg.contains("http.debug.addr"), "{msg}");
    let e = err("http:\n  addr: :5000\n  debug:\n    addr: 0.0.0.0:5000\n");
    assert!(e.to_string().contains("http.debug.addr"), "{e}");
}

#[test]
fn http_prefix_and_net_limits() {
    let e = err("http:\n  prefix: /registry\n");
    assert!(
        matches!(&e, ConfigError::Unsupported { key, .. } if key == "http.prefix"),
        "{e:?}"
    );
    let c = Config::from_yaml_str("http:\n  prefix: /\n").expect("slash");
    assert_eq!(c.http.prefix, "");
    let e = err("http:\n  net: unix\n");
    assert_eq!(e.key(), Some("http.net"));
    let e = err("storage:\n  cache:\n    blobdescriptor: redis\n");
    assert_eq!(e.key(), Some("redis.addr"), "{e:?}");
    let e = err("http:\n  headers:\n    \"Bad Header\": [x]\n");
    assert_eq!(e.key(), Some("http.headers.Bad Header"));
}

#[test]
fn upstream_rules() {
    let base = "proxy:\n  upstreams:\n";
    let e = err(&format!(
        "{base}    - name: ghcr.io\n      remoteurl: https://ghcr.io\n    - name: GHCR.io\n      remoteurl: https://other\n"
    ));
    assert_eq!(e.key(), Some("proxy.upstreams[1].name"));
    let e = err(&format!("{base}    - remoteurl: https://ghcr.io\n"));
    assert_eq!(e.key(), Some("proxy.upstreams[0].name"));
    let e = err(&format!("{base}    - name: ghcr.io\n"));
    assert_eq!(e.key(), Some("proxy.upstreams[0].remoteurl"));
    let e = err(&format!(
        "{base}    - name: a\n      remoteurl: https://a\n      prefix: x/\n    - name: b\n      remoteurl: https://b\n      prefix: x\n"
    ));
    assert_eq!(e.key(), Some("proxy.upstreams[1].prefix"));
    let e = err(&format!(
        "{base}    - name: a\n      remoteurl: https://a\n      prefix: Bad/\n"
    ));
    assert_eq!(e.key(), Some("proxy.upstreams[0].prefix"));
    let e = err(&format!(
        "{base}    - name: a\n      remoteurl: https://a\n      username: u\n"
    ));
    assert_eq!(e.key(), Some("proxy.upstreams[0].password"));
    let e = err(
        "proxy:\n  localprefixes: [a/]\n  upstreams:\n    - name: a\n      remoteurl: https://a\n      prefix: a/\n",
    );
    assert!(e.to_string().contains("proxy.localprefixes"), "{e}");
    let e = err("proxy:\n  upstreams: ghcr.io\n");
    assert_eq!(e.key(), Some("proxy.upstreams"));
}

#[test]
fn localprefix_and_proxy_rules() {
    let c = Config::from_yaml_str("proxy:\n  localprefixes: [local, team/]\n").expect("parse");
    assert_eq!(c.proxy.localprefixes, vec!["local/", "team/"]);
    let e = err("proxy:\n  localprefixes: [\"/abs\"]\n");
    assert_eq!(e.key(), Some("proxy.localprefixes[0]"));
    let e = err("proxy:\n  localprefixes: [a/, b/, a]\n");
    assert_eq!(e.key(), Some("proxy.localprefixes[2]"));
    let e = err("proxy:\n  remoteurl: https://r\n  password: p\n");
    assert_eq!(e.key(), Some("proxy.username"));
    let e = err("proxy:\n  maxsize: 0\n");
    assert_eq!(e.key(), Some("proxy.maxsize"));
    let e = err("proxy:\n  timeout: 0s\n");
    assert_eq!(e.key(), Some("proxy.timeout"));
}

#[test]
fn validate_checks_programmatic_configs() {
    let mut c = Config::default_mirror();
    c.proxy.remoteurl = Some("https://registry-1.docker.io/".into());
    assert_eq!(
        c.validate().expect_err("slash").key(),
        Some("proxy.remoteurl")
    );
    let mut c = Config::default();
    c.proxy.upstreams.push(UpstreamConfig {
        name: "ghcr.io".into(),
        remoteurl: "https://ghcr.io".into(),
        username: None,
        password: None,
        prefix: Some("ghcr".into()),
        allow: Vec::new(),
        deny: Vec::new(),
        cooldown: None,
    });
    assert_eq!(
        c.validate().expect_err("prefix without slash").key(),
        Some("proxy.upstreams[0].prefix")
    );
    c.proxy.upstreams[0].prefix = Some("ghcr/".into());
    c.validate().expect("valid");
    c.auth.htpasswd = Some(HtpasswdAuth {
        realm: String::new(),
        path: "/p".into(),
    });
    assert_eq!(
        c.validate().expect_err("realm").key(),
        Some("auth.htpasswd.realm")
    );
}

// ------------------------------------------------------------ environment

#[test]
fn env_overlay_sets_known_keys() {
    let c = load_env(
        "version: 0.1\n",
        &[
            ("REGISTRY_HTTP_ADDR", ":6000"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/srv/registry"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("REGISTRY_PROXY_REMOTEURL", "https://mirror.example/"),
            ("REGISTRY_PROXY_USERNAME", "bob"),
            ("REGISTRY_PROXY_PASSWORD", "0123"),
            ("REGISTRY_PROXY_TAGTTL", "10m"),
            ("REGISTRY_PROXY_MAXSIZE", "5GiB"),
            ("REGISTRY_PROXY_LOCALPREFIXES", "[local/, team]"),
            ("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:5001"),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true"),
            ("REGISTRY_LOG_LEVEL", "debug"),
            ("REGISTRY_LOG_FIELDS_ENVIRONMENT", "prod"),
            ("REGISTRY_HTTP_TLS_CERTIFICATE", "/certs/domain.crt"),
            ("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key"),
            ("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTORSIZE", "500"),
            ("PATH", "/usr/bin"),
        ],
    )
    .expect("load");
    assert_eq!(c.http.addr, addr("0.0.0.0:6000"));
    assert_eq!(
        c.storage.filesystem.rootdirectory,
        PathBuf::from("/srv/registry")
    );
    assert!(c.storage.delete.enabled);
    assert_eq!(c.proxy.remoteurl.as_deref(), Some("https://mirror.example"));
    assert_eq!(c.proxy.username.as_deref(), Some("bob"));
    assert_eq!(
        c.proxy.password.as_ref().map(Secret::expose),
        Some("0123"),
        "strings are verbatim"
    );
    assert_eq!(c.proxy.tagttl, secs(600));
    assert_eq!(c.proxy.maxsize, Some(5 << 30));
    assert_eq!(c.proxy.localprefixes, vec!["local/", "team/"]);
    assert_eq!(c.http.debug.addr, Some(addr("127.0.0.1:5001")));
    assert!(c.http.debug.prometheus.enabled);
    assert_eq!(c.log.level, LogLevel::Debug);
    assert_eq!(c.log.fields["environment"], "prod");
    let tls = c.http.tls.expect("tls from env");
    assert_eq!(tls.key, PathBuf::from("/certs/domain.key"));
    assert_eq!(c.storage.cache.blobdescriptorsize, 500);
}

#[test]
fn env_overrides_the_file_and_creates_sections() {
    let file = "http:\n  addr: :5000\nstorage:\n  delete:\n    enabled: true\n";
    let c = load_env(
        file,
        &[
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:7000"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
        ],
    )
    .expect("load");
    assert_eq!(c.http.addr, addr("127.0.0.1:7000"));
    assert!(!c.storage.delete.enabled);
    assert_eq!(
        c.auth.htpasswd,
        Some(HtpasswdAuth {
            realm: "Registry Realm".into(),
            path: "/auth/htpasswd".into()
        })
    );
}

#[test]
fn env_as_in_the_deploying_guide() {
    // docker run -e REGISTRY_AUTH=htpasswd -e REGISTRY_AUTH_HTPASSWD_REALM=... registry:2
    let c = Config::load(
        None,
        &[
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
            ("REGISTRY_HTTP_ADDR", "0.0.0.0:443"),
        ],
    )
    .expect("guide env");
    assert_eq!(
        c.auth.htpasswd.as_ref().expect("htpasswd").realm,
        "Registry Realm"
    );
    assert_eq!(c.http.addr, addr("0.0.0.0:443"));
    assert!(c.proxy_enabled(), "no file: still the default mirror");

    let e = Config::load(None, &[("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd")])
        .expect_err("realm missing");
    assert_eq!(e.key(), Some("auth.htpasswd.realm"));
}

#[test]
fn env_can_set_whole_sections_and_list_entries() {
    let c = Config::load(
        None,
        &[
            (
                "REGISTRY_PROXY_UPSTREAMS",
                "[{name: ghcr.io, remoteurl: 'https://ghcr.io', prefix: ghcr/}]",
            ),
            ("REGISTRY_PROXY_UPSTREAMS_1_NAME", "quay.io"),
            ("REGISTRY_PROXY_UPSTREAMS_1_REMOTEURL", "https://quay.io"),
            ("REGISTRY_HTTP_HEADERS_X-FRAME-OPTIONS", "[DENY]"),
        ],
    )
    .expect("load");
    assert_eq!(c.proxy.upstreams.len(), 2);
    assert_eq!(c.proxy.upstreams[1].name, "quay.io");
    assert_eq!(c.http.headers["x-frame-options"], vec!["DENY".to_string()]);

    let e = Config::load(None, &[("REGISTRY_PROXY_UPSTREAMS_3_NAME", "x")]).expect_err("gap");
    assert!(
        e.to_string().contains("REGISTRY_PROXY_UPSTREAMS_3_NAME"),
        "{e}"
    );
}

#[test]
fn unknown_env_var_is_an_error_naming_it() {
    let e = env_err("", &[("REGISTRY_HTTP_ADR", ":5000")]);
    assert!(
        matches!(&e, ConfigError::UnknownEnv { var, key, suggestion }
            if var == "REGISTRY_HTTP_ADR" && key == "http.adr"
            && suggestion.as_deref() == Some("REGISTRY_HTTP_ADDR")),
        "{e:?}"
    );
    assert!(e.to_string().contains("REGISTRY_HTTP_ADR"), "{e}");
    let e = env_err("", &[("REGISTRY_HTTP_ADDR_PORT", "5000")]);
    assert_eq!(e.key(), Some("http.addr.port"));
    let e = env_err("", &[("REGISTRY_", "x")]);
    assert!(matches!(e, ConfigError::UnknownEnv { .. }), "{e:?}");
}

#[test]
fn unsupported_env_var_is_named() {
    let e = env_err("", &[("REGISTRY_STORAGE_AZURE_ACCOUNTNAME", "acct")]);
    let msg = e.to_string();
    assert!(msg.contains("\"storage.azure\" is not supported"), "{msg}");
    assert!(msg.contains("REGISTRY_STORAGE_AZURE_ACCOUNTNAME"), "{msg}");
}

#[test]
fn bad_env_values_name_the_variable() {
    let e = env_err("", &[("REGISTRY_HTTP_ADDR", "bogus")]);
    assert!(
        matches!(&e, ConfigError::FromEnv { var, source }
            if var == "REGISTRY_HTTP_ADDR" && source.key() == Some("http.addr")),
        "{e:?}"
    );
    assert!(e.to_string().contains("\"bogus\""), "{e}");
    let e = env_err("", &[("REGISTRY_STORAGE_DELETE_ENABLED", "perhaps")]);
    assert!(
        e.to_string().contains("REGISTRY_STORAGE_DELETE_ENABLED"),
        "{e}"
    );
    let e = env_err("", &[("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true")]);
    assert!(
        e.to_string()
            .contains("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED"),
        "{e}"
    );
    // A file error stays a file error.
    let e = env_err("http:\n  addr: bogus\n", &[("REGISTRY_LOG_LEVEL", "info")]);
    assert!(matches!(e, ConfigError::InvalidValue { .. }), "{e:?}");
}

#[test]
fn kubernetes_service_links_are_ignored() {
    let c = load_env(
        "",
        &[
            ("REGISTRY_SERVICE_HOST", "10.0.0.7"),
            ("REGISTRY_SERVICE_PORT", "5000"),
            ("REGISTRY_SERVICE_PORT_HTTP", "5000"),
            ("REGISTRY_PORT", "tcp://10.0.0.7:5000"),
            ("REGISTRY_PORT_5000_TCP", "tcp://10.0.0.7:5000"),
            ("REGISTRY_PORT_5000_TCP_PROTO", "tcp"),
            ("REGISTRY_PORT_5000_TCP_PORT", "5000"),
            ("REGISTRY_PORT_5000_TCP_ADDR", "10.0.0.7"),
        ],
    )
    .expect("service links ignored");
    assert_eq!(c, Config::default());
    assert!(
        env_err("", &[("REGISTRY_PORT_X", "1")])
            .to_string()
            .contains("REGISTRY_PORT_X")
    );
}

#[test]
fn secrets_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = dir.path().join("user");
    let pass = dir.path().join("pass");
    let secret = dir.path().join("secret");
    std::fs::write(&user, "alice\n").expect("write");
    std::fs::write(&pass, "s3cr3t with spaces \n\n").expect("write");
    std::fs::write(&secret, "hmac-key").expect("write");
    let (u, p, s) = (
        user.display().to_string(),
        pass.display().to_string(),
        secret.display().to_string(),
    );
    let c = load_env(
        "proxy:\n  remoteurl: https://r.example\n",
        &[
            ("REGISTRY_PROXY_USERNAME_FILE", &u),
            ("REGISTRY_PROXY_PASSWORD_FILE", &p),
            ("REGISTRY_HTTP_SECRET_FILE", &s),
        ],
    )
    .expect("load");
    assert_eq!(c.proxy.username.as_deref(), Some("alice"));
    assert_eq!(c.proxy.password, Some("s3cr3t with spaces ".into()));
    assert_eq!(c.http.secret, Some("hmac-key".into()));

    let e = env_err(
        "",
        &[
            ("REGISTRY_PROXY_PASSWORD", "x"),
            ("REGISTRY_PROXY_PASSWORD_FILE", &p),
        ],
    );
    assert_eq!(e.key(), Some("proxy.password"));
    assert!(e.to_string().contains("set only one"), "{e}");

    let e = env_err(
        "",
        &[("REGISTRY_PROXY_PASSWORD_FILE", "/nonexistent/secret")],
    );
    assert!(matches!(e, ConfigError::SecretFile { .. }), "{e:?}");
    assert!(
        e.to_string().contains("REGISTRY_PROXY_PASSWORD_FILE"),
        "{e}"
    );

    // Only secrets have a _FILE form.
    let e = env_err("", &[("REGISTRY_PROXY_REMOTEURL_FILE", &p)]);
    assert!(matches!(e, ConfigError::UnknownEnv { .. }), "{e:?}");
}

#[test]
fn env_sources_for_tests_and_process() {
    let mut map = HashMap::new();
    map.insert("REGISTRY_LOG_LEVEL".to_string(), "error".to_string());
    assert_eq!(
        Config::load(None, &map).expect("map").log.level,
        LogLevel::Error
    );
    let mut bmap = BTreeMap::new();
    bmap.insert("REGISTRY_LOG_LEVEL".to_string(), "trace".to_string());
    assert_eq!(
        Config::load(None, &bmap).expect("btree").log.level,
        LogLevel::Trace
    );
    // The process environment is readable (its REGISTRY_* content is not ours to assume).
    let _ = ProcessEnv.vars();
}

// --------------------------------------------------------------- redaction

#[test]
fn debug_output_redacts_secrets() {
    let c = Config::from_yaml_str(
        "http:\n  secret: hmac-SECRET-1\n  debug:\n    addr: 127.0.0.1:5001\n    token: debug-SECRET-4\nredis:\n  addr: 127.0.0.1:6379\n  password: redis-SECRET-5\nproxy:\n  remoteurl: https://r.example\n  username: user\n  password: hub-SECRET-2\n  upstreams:\n    - name: ghcr.io\n      remoteurl: https://ghcr.io\n      username: gh\n      password: gh-SECRET-3\n",
    )
    .expect("parse");
    assert_eq!(
        c.http.debug.token.as_ref().map(Secret::expose),
        Some("debug-SECRET-4"),
        "the value is read, only hidden"
    );
    let shown = format!("{c:?}");
    for secret in [
        "hmac-SECRET-1",
        "hub-SECRET-2",
        "gh-SECRET-3",
        "debug-SECRET-4",
        "redis-SECRET-5",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains("https://ghcr.io"), "{shown}");
    let pretty = format!("{c:#?}");
    assert!(!pretty.contains("SECRET"), "{pretty}");
    // Unset secrets show as None.
    assert!(format!("{:?}", Config::default()).contains("secret: None"));
}

#[test]
fn http_limits() {
    let c = Config::from_yaml_str(
        "http:\n  limits:\n    maxconns: 10\n    maxconnsperclient: 0\n    requestspersecond: 2.5\n    headertimeout: 5s\n    idletimeout: 0s\n    bodytimeout: 1m\n    maxheaderbytes: 16KiB\n    maxheaders: 50\n    maxstreams: 8\n",
    )
    .expect("limits");
    let l = &c.http.limits;
    assert_eq!((l.maxconns, l.maxconnsperclient), (10, 0));
    assert_eq!(l.requestspersecond, 2.5);
    assert_eq!(l.effective_burst(), 5.0);
    assert_eq!((l.headertimeout, l.bodytimeout), (secs(5), secs(60)));
    assert_eq!(l.idletimeout, Duration::ZERO);
    assert_eq!(
        (l.maxheaderbytes, l.maxheaders, l.maxstreams),
        (16 * 1024, 50, 8)
    );
    let c = Config::from_yaml_str("http:\n  limits:\n    requestspersecond: 0.2\n    burst: 7\n")
        .expect("burst");
    assert_eq!(c.http.limits.effective_burst(), 7.0);
    assert_eq!(LimitsConfig::default().effective_burst(), 1.0);
    for (text, key) in [
        (
            "http:\n  limits:\n    requestspersecond: -1\n",
            "http.limits.requestspersecond",
        ),
        (
            "http:\n  limits:\n    requestspersecond: fast\n",
            "http.limits.requestspersecond",
        ),
        (
            "http:\n  limits:\n    headertimeout: 0s\n",
            "http.limits.headertimeout",
        ),
        (
            "http:\n  limits:\n    bodytimeout: 0\n",
            "http.limits.bodytimeout",
        ),
        (
            "http:\n  limits:\n    maxheaderbytes: 1KiB\n",
            "http.limits.maxheaderbytes",
        ),
        (
            "http:\n  limits:\n    maxheaderbytes: 2MiB\n",
            "http.limits.maxheaderbytes",
        ),
        (
            "http:\n  limits:\n    maxstreams: 0\n",
            "http.limits.maxstreams",
        ),
        (
            "http:\n  limits:\n    maxheaders: 0\n",
            "http.limits.maxheaders",
        ),
        ("http:\n  limits:\n    maxconn: 3\n", "http.limits.maxconn"),
    ] {
        assert_eq!(err(text).key(), Some(key), "{text}");
    }
    let c = load_env(
        "version: 0.1\n",
        &[
            ("REGISTRY_HTTP_LIMITS_REQUESTSPERSECOND", "3"),
            ("REGISTRY_HTTP_LIMITS_BURST", "9"),
        ],
    )
    .expect("limits from env");
    assert_eq!(c.http.limits.requestspersecond, 3.0);
    assert_eq!(c.http.limits.burst, 9);
}

#[test]
fn resilience_keys_parse_validate_and_come_from_the_environment() {
    let c = Config::from_yaml_str(
        "proxy:\n  remoteurl: http://127.0.0.1:1\n  connecttimeout: 2s\n  revalidatetimeout: 500ms\n  offline: true\n  maxfetches: 4\n  breakerthreshold: 0\n  breakermaxbackoff: 10s\n",
    )
    .expect("parse");
    let p = &c.proxy;
    assert_eq!(
        (p.connecttimeout, p.revalidatetimeout),
        (secs(2), Duration::from_millis(500))
    );
    assert!(p.offline);
    assert_eq!((p.maxfetches, p.breakerthreshold), (4, 0));
    assert_eq!(p.breakermaxbackoff, secs(10));
    c.validate().expect("valid");

    let c = load_env(
        "proxy:\n  remoteurl: http://127.0.0.1:1\n",
        &[
            ("REGISTRY_PROXY_OFFLINE", "true"),
            ("REGISTRY_PROXY_MAXFETCHES", "8"),
        ],
    )
    .expect("env");
    assert!(c.proxy.offline);
    assert_eq!(c.proxy.maxfetches, 8);

    for bad in [
        "maxfetches: 0",
        "connecttimeout: 0s",
        "breakermaxbackoff: 0s",
    ] {
        let err = Config::from_yaml_str(&format!(
            "proxy:\n  remoteurl: http://127.0.0.1:1\n  {bad}\n"
        ))
        .and_then(|c| c.validate())
        .expect_err(bad)
        .to_string();
        let key = bad.split(':').next().unwrap();
        assert!(err.contains(&format!("proxy.{key}")), "{bad}: {err}");
    }
}

// ------------------------------------------------- redis, layerinfo, http.*

#[test]
fn layerinfo_is_the_older_name_of_blobdescriptor() {
    let c = Config::from_yaml_str(
        "storage:\n  cache:\n    layerinfo: redis\nredis:\n  addr: localhost:6379\n",
    )
    .expect("layerinfo");
    assert_eq!(c.storage.cache.blobdescriptor, "redis");
    let c = Config::from_yaml_str("storage:\n  cache:\n    layerinfo: inmemory\n").expect("old");
    assert_eq!(c.storage.cache.blobdescriptor, "inmemory");
    let c = load_env(
        "",
        &[
            ("REGISTRY_STORAGE_CACHE_LAYERINFO", "redis"),
            ("REGISTRY_REDIS_ADDR", "redis:6379"),
        ],
    )
    .expect("env");
    assert_eq!(c.storage.cache.blobdescriptor, "redis");
    let e = err("storage:\n  cache:\n    layerinfo: redis\n    blobdescriptor: inmemory\n");
    assert!(matches!(e, ConfigError::Conflict { .. }), "{e:?}");
    let e = err("storage:\n  cache:\n    layerinfo: memcached\n");
    assert_eq!(e.key(), Some("storage.cache.blobdescriptor"));
}

#[test]
fn redis_keys_as_distribution_spells_them() {
    let c = Config::from_yaml_str(
        "storage:
  cache:
    blobdescriptor: redis
redis:
  addr: redis.internal:6380
  password: pw
  db: 2
  dialtimeout: 10ms
  readtimeout: 10ms
  writetimeout: 10ms
  pool:
    maxidle: 16
    maxactive: 64
    idletimeout: 300s
  tls:
    enabled: false
",
    )
    .expect("redis config");
    let r = c.redis.as_ref().expect("redis");
    assert_eq!(r.addr, "redis.internal:6380");
    assert_eq!(r.password, Some("pw".into()));
    assert_eq!(r.db, 2);
    assert_eq!(r.dialtimeout, Duration::from_millis(10));
    assert_eq!(r.readtimeout, Duration::from_millis(10));
    assert_eq!(r.writetimeout, Duration::from_millis(10));
    assert_eq!((r.pool.maxidle, r.pool.maxactive), (16, 64));
    assert_eq!(r.pool.idletimeout, secs(300));
    assert_eq!(r.tls, RedisTls::default());
    let tc = Config::from_yaml_str(
        "redis:\n  addr: h:1\n  tls:\n    enabled: true\n    certificate: /c.pem\n    key: /k.pem\n    clientcas: [/ca1.pem, /ca2.pem]\n",
    )
    .expect("tls");
    let t = tc.redis.expect("redis").tls;
    assert!(t.enabled);
    assert_eq!(t.certificate, Some(PathBuf::from("/c.pem")));
    assert_eq!(t.key, Some(PathBuf::from("/k.pem")));
    assert_eq!(
        t.clientcas,
        vec![PathBuf::from("/ca1.pem"), PathBuf::from("/ca2.pem")]
    );
    assert!(!format!("{c:?}").contains("pw\""), "password leaked");
    // Defaults.
    let c = Config::from_yaml_str("redis:\n  addr: localhost:6379\n").expect("defaults");
    let r = c.redis.expect("redis");
    assert_eq!((r.db, r.dialtimeout, r.readtimeout), (0, secs(1), secs(1)));
    assert_eq!(
        c.storage.cache.blobdescriptor, "inmemory",
        "a redis block alone selects nothing"
    );
}

#[test]
fn redis_password_from_a_file_and_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").expect("write");
    let c = load_env(
        "redis:\n  addr: localhost:6379\n",
        &[("REGISTRY_REDIS_PASSWORD_FILE", &pw.display().to_string())],
    )
    .expect("load");
    assert_eq!(c.redis.and_then(|r| r.password), Some("s3cret".into()));
    let c = load_env(
        "",
        &[("REGISTRY_REDIS_DB", "3"), ("REGISTRY_REDIS_ADDR", "r:1")],
    )
    .expect("env");
    assert_eq!(c.redis.map(|r| r.db), Some(3));
}

#[test]
fn bad_redis_values_are_named() {
    for (text, key) in [
        ("redis:\n  addr: nope\n", "redis.addr"),
        ("redis:\n  addr: \"h:0\"\n", "redis.addr"),
        ("redis:\n  addr: h:1\n  db: -1\n", "redis.db"),
        ("redis:\n  addr: h:1\n  db: x\n", "redis.db"),
        (
            "redis:\n  addr: h:1\n  dialtimeout: 0\n",
            "redis.dialtimeout",
        ),
        (
            "redis:\n  addr: h:1\n  readtimeout: soon\n",
            "redis.readtimeout",
        ),
        (
            "redis:\n  addr: h:1\n  pool:\n    maxactive: -3\n",
            "redis.pool.maxactive",
        ),
        ("redis:\n  adr: h:1\n", "redis.adr"),
        (
            "redis:\n  addr: h:1\n  tls:\n    enabled: true\n    certificate: /c.pem\n",
            "redis.tls.key",
        ),
        (
            "redis:\n  addr: h:1\n  tls:\n    enabled: true\n    key: /k.pem\n",
            "redis.tls.certificate",
        ),
        (
            "redis:\n  addr: h:1\n  tls:\n    clientcas: [/ca.pem]\n",
            "redis.tls.certificate",
        ),
        (
            "redis:\n  addr: h:1\n  tls:\n    enabled: maybe\n",
            "redis.tls.enabled",
        ),
    ] {
        assert_eq!(err(text).key(), Some(key), "{text}");
    }
    let c = Config::from_yaml_str("redis:\n  addr: \"[::1]:6379\"\n").expect("v6");
    assert_eq!(c.redis.map(|r| r.addr).as_deref(), Some("[::1]:6379"));
}

#[test]
fn relativeurls_is_three_way() {
    let c = Config::default();
    assert_eq!(c.http.relativeurls, None);
    let c = Config::from_yaml_str("http:\n  relativeurls: false\n").expect("false");
    assert_eq!(c.http.relativeurls, Some(false));
    let c = Config::from_yaml_str("http:\n  relativeurls: true\n  host: https://r.example\n")
        .expect("both");
    assert_eq!(c.http.relativeurls, Some(true));
    assert_eq!(c.http.host.as_deref(), Some("https://r.example"));
    assert_eq!(err("http:\n  host: r.example\n").key(), Some("http.host"));
}

#[test]
fn pull_policy_keys_load_from_file_and_env() {
    let c = Config::from_yaml_str(
        "proxy:\n  remoteurl: https://r.example\n  allow: [library/*, bitnami/*]\n  deny: library/bad\n  policy:\n    mode: audit\n    contact: \"ask #platform\"\n  upstreams:\n    - name: ghcr.io\n      remoteurl: https://ghcr.io\n      deny: [\"**\"]\n",
    )
    .expect("parse");
    assert_eq!(c.proxy.allow, vec!["library/*", "bitnami/*"]);
    assert_eq!(c.proxy.deny, vec!["library/bad"]);
    assert_eq!(c.proxy.policy.mode, PolicyMode::Audit);
    assert_eq!(c.proxy.policy.contact.as_deref(), Some("ask #platform"));
    assert_eq!(c.proxy.upstreams[0].deny, vec!["**"]);
    assert!(Config::default().proxy.allow.is_empty());
    assert_eq!(Config::default().proxy.policy.mode, PolicyMode::Enforce);

    let c = load_env(
        "proxy:\n  remoteurl: https://r.example\n  upstreams:\n    - name: q\n      remoteurl: https://q\n",
        &[
            ("REGISTRY_PROXY_ALLOW", "[library/*]"),
            ("REGISTRY_PROXY_DENY", "[x/**]"),
            ("REGISTRY_PROXY_POLICY_MODE", "enforce"),
            ("REGISTRY_PROXY_POLICY_CONTACT", "mail ops@example.com"),
            ("REGISTRY_PROXY_UPSTREAMS_0_ALLOW", "[team/*]"),
        ],
    )
    .expect("env");
    assert_eq!(c.proxy.allow, vec!["library/*"]);
    assert_eq!(c.proxy.deny, vec!["x/**"]);
    assert_eq!(
        c.proxy.policy.contact.as_deref(),
        Some("mail ops@example.com")
    );
    assert_eq!(c.proxy.upstreams[0].allow, vec!["team/*"]);
}

#[test]
fn bad_pull_policy_values_name_the_key() {
    let e = err("proxy:\n  policy:\n    mode: loud\n");
    assert_eq!(e.key(), Some("proxy.policy.mode"), "{e}");
    let e = err("proxy:\n  allow: [library/*, \"Upper/*\"]\n");
    assert_eq!(e.key(), Some("proxy.allow[1]"), "{e}");
    let e = err("proxy:\n  deny: [\"/abs\"]\n");
    assert_eq!(e.key(), Some("proxy.deny[0]"), "{e}");
    let e = err(
        "proxy:\n  upstreams:\n    - name: a\n      remoteurl: https://a\n      deny: [\"\"]\n",
    );
    assert_eq!(e.key(), Some("proxy.upstreams[0].deny[0]"), "{e}");
    let e = err("proxy:\n  alow: [a]\n");
    assert!(e.to_string().contains("allow"), "{e}");
}

#[test]
fn warm_and_cooldown_keys_read_from_yaml_and_env() {
    let c = Config::from_yaml_str(
        "proxy:\n  remoteurl: https://registry-1.docker.io\n  cooldown: 168h\n  warm:\n    file: /etc/stevedore/warm.list\n    interval: 6h\n  upstreams:\n    - name: ghcr.io\n      remoteurl: https://ghcr.io\n      cooldown: 0s\n    - name: quay.io\n      remoteurl: https://quay.io\n",
    )
    .expect("parse");
    assert_eq!(c.proxy.cooldown, secs(168 * 3600));
    assert_eq!(
        c.proxy.warm.file.as_deref(),
        Some(Path::new("/etc/stevedore/warm.list"))
    );
    assert_eq!(c.proxy.warm.interval, secs(6 * 3600));
    assert_eq!(c.proxy.upstreams[0].cooldown, Some(secs(0)));
    assert_eq!(c.proxy.upstreams[1].cooldown, None);
    assert_eq!(Config::default().proxy.cooldown, secs(0));
    assert!(Config::from_yaml_str("proxy:\n  cooldown: 7d\n").is_err());
    let c = load_env(
        "version: 0.1\n",
        &[
            ("REGISTRY_PROXY_WARM_FILE", "/w.list"),
            ("REGISTRY_PROXY_WARM_INTERVAL", "30m"),
            ("REGISTRY_PROXY_COOLDOWN", "48h"),
        ],
    )
    .expect("load");
    assert_eq!(c.proxy.warm.file.as_deref(), Some(Path::new("/w.list")));
    assert_eq!(c.proxy.warm.interval, secs(1800));
    assert_eq!(c.proxy.cooldown, secs(48 * 3600));
}

#[test]
fn pin_patterns_load_and_bad_ones_name_the_entry() {
    let c = Config::from_yaml_str(
        "proxy:\n  remoteurl: https://r.example\n  pin: [\"library/alpine:3.*\", \"bitnami/**\"]\n",
    )
    .expect("parse");
    assert_eq!(c.proxy.pin, vec!["library/alpine:3.*", "bitnami/**"]);
    let c = load_env(
        "proxy:\n  remoteurl: https://r.example\n",
        &[("REGISTRY_PROXY_PIN", "[team/*]")],
    )
    .expect("env");
    assert_eq!(c.proxy.pin, vec!["team/*"]);
    for bad in ["Library/x", "a/b:", "a/b:v/1", "/a"] {
        let e = err(&format!("proxy:\n  pin: [\"{bad}\"]\n"));
        assert_eq!(e.key(), Some("proxy.pin[0]"), "{bad}: {e}");
    }
}

const S3_YAML: &str = "storage:\n  s3:\n    region: us-east-1\n    bucket: reg\n";

#[test]
fn s3_storage_reads_distributions_keys() {
    let c = Config::from_yaml_str(
        "storage:\n  s3:\n    accesskey: AKIA\n    secretkey: shh\n    region: eu-west-1\n    regionendpoint: http://127.0.0.1:9000\n    bucket: reg\n    rootdirectory: /registry\n    secure: false\n    skipverify: false\n    forcepathstyle: true\n    v4auth: true\n    chunksize: 6MiB\n    multipartcopychunksize: 33554432\n    multipartcopymaxconcurrency: 100\n    multipartcopythresholdsize: 33554432\n    storageclass: REDUCED_REDUNDANCY\n    cachedirectory: /var/cache/stevedore\n  redirect:\n    disable: true\n",
    )
    .expect("parse");
    let s3 = c.storage.s3.as_ref().expect("s3");
    assert_eq!(s3.accesskey.as_deref(), Some("AKIA"));
    assert_eq!(s3.secretkey, Some("shh".into()));
    assert_eq!(
        format!("{s3:?}").matches("shh").count(),
        0,
        "secret printed"
    );
    assert_eq!(s3.region, "eu-west-1");
    assert_eq!(s3.regionendpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(
        (s3.bucket.as_str(), s3.rootdirectory.as_str()),
        ("reg", "/registry")
    );
    assert!(!s3.secure && s3.forcepathstyle == Some(true));
    assert_eq!(s3.chunksize, 6 << 20);
    assert_eq!(s3.storageclass, "REDUCED_REDUNDANCY");
    assert!(c.storage.redirect.disable);
    assert_eq!(
        c.storage.local_root(),
        std::path::Path::new("/var/cache/stevedore")
    );

    let c = Config::from_yaml_str(S3_YAML).expect("parse");
    let s3 = c.storage.s3.as_ref().expect("s3");
    assert_eq!(s3.chunksize, S3_DEFAULT_CHUNK_SIZE);
    assert!(s3.secure && s3.v4auth && !c.storage.redirect.disable);
    assert_eq!(c.storage.local_root(), std::path::Path::new("./data"));
}

#[test]
fn s3_storage_keys_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("secretkey");
    std::fs::write(&key, "from-a-file\n").expect("write");
    let k = key.display().to_string();
    let c = load_env(
        "",
        &[
            ("REGISTRY_STORAGE_S3_REGION", "us-east-2"),
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "id"),
            ("REGISTRY_STORAGE_S3_SECRETKEY_FILE", &k),
            ("REGISTRY_STORAGE_S3_CHUNKSIZE", "5242880"),
        ],
    )
    .expect("load");
    let s3 = c.storage.s3.expect("s3 from env");
    assert_eq!((s3.region.as_str(), s3.bucket.as_str()), ("us-east-2", "b"));
    assert_eq!(s3.secretkey, Some("from-a-file".into()));
    assert_eq!(s3.chunksize, 5 << 20);
}

#[test]
fn s3_storage_is_checked() {
    let e = err(
        "storage:\n  filesystem:\n    rootdirectory: /d\n  s3:\n    region: r\n    bucket: b\n",
    );
    assert_eq!(e.key(), Some("storage.s3"));
    assert!(e.to_string().contains("choose one storage driver"), "{e}");
    assert_eq!(
        err("storage:\n  s3:\n    region: r\n").key(),
        Some("storage.s3.bucket")
    );
    for (extra, key) in [
        ("    chunksize: 1MiB\n", "storage.s3.chunksize"),
        ("    chunksize: 6GiB\n", "storage.s3.chunksize"),
        ("    v4auth: false\n", "storage.s3.v4auth"),
        ("    skipverify: true\n", "storage.s3.skipverify"),
        ("    objectacl: public-read\n", "storage.s3.objectacl"),
        ("    keyid: k\n", "storage.s3.keyid"),
        ("    regionendpoint: ftp://x\n", "storage.s3.regionendpoint"),
        ("    bukcet: x\n", "storage.s3.bukcet"),
    ] {
        let e = err(&format!("{S3_YAML}{extra}"));
        assert_eq!(e.key(), Some(key), "{extra}: {e}");
    }
}

#[test]
fn peers_keys_read_from_yaml_and_env_and_are_checked() {
    let c = Config::from_yaml_str(
        "proxy:\n  remoteurl: https://registry-1.docker.io\n  peers:\n    static: [\"10.0.0.1:5000\", \"10.0.0.2:5000\"]\n    self: 10.0.0.1:5000\n    probeinterval: 500ms\n",
    )
    .expect("parse");
    let p = &c.proxy.peers;
    assert_eq!(p.static_peers, vec!["10.0.0.1:5000", "10.0.0.2:5000"]);
    assert_eq!(p.self_addr.as_deref(), Some("10.0.0.1:5000"));
    assert_eq!(p.probeinterval, Duration::from_millis(500));
    assert_eq!(p.port, 5000);
    assert!(p.enabled());
    assert!(!Config::default().proxy.peers.enabled());
    let c = load_env(
        "proxy:\n  remoteurl: https://r.example\n",
        &[
            ("REGISTRY_PROXY_PEERS_DNS", "stevedore-peers.registry.svc"),
            ("REGISTRY_PROXY_PEERS_PORT", "5001"),
            ("REGISTRY_PROXY_PEERS_SELF", "10.1.2.3:5001"),
        ],
    )
    .expect("env");
    assert_eq!(
        c.proxy.peers.dns.as_deref(),
        Some("stevedore-peers.registry.svc")
    );
    assert_eq!(c.proxy.peers.port, 5001);
    assert_eq!(c.proxy.peers.self_addr.as_deref(), Some("10.1.2.3:5001"));
    let err = Config::from_yaml_str("proxy:\n  peers:\n    static: [\"no-port\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("proxy.peers.static[0]"), "{err}");
    let err = Config::from_yaml_str("proxy:\n  peers:\n    probeinterval: 0s\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("proxy.peers.probeinterval"), "{err}");
}

#[test]
fn notifications_read_distribution_keys_and_extensions() {
    let c = Config::from_yaml_str(
        r#"
notifications:
  events:
    includereferences: true
  endpoints:
    - name: ui
      url: http://ui:8080/events?token=abc
      headers:
        Authorization: [Bearer sekrit]
        X-One: single
      timeout: 500ms
      threshold: 5
      backoff: 2s
      ignoredmediatypes: [application/octet-stream]
      ignore:
        mediatypes: [application/vnd.oci.image.config.v1+json]
        actions: [pull]
      queue: {size: 10, overflow: dropnewest, persistent: true}
      maxattempts: 4
      maxbackoff: 1m
      format: cloudevents
      signing: {secretfiles: [/run/secrets/a, /run/secrets/b]}
      repositories: ["team/**"]
      actions: [push, cache.fill]
      cacheevents: true
    - name: off
      disabled: true
"#,
    )
    .expect("notifications");
    let n = &c.notifications;
    assert!(n.events.includereferences);
    let e = &n.endpoints[0];
    assert_eq!(e.headers["Authorization"][0].expose(), "Bearer sekrit");
    assert_eq!(e.headers["X-One"][0].expose(), "single");
    assert_eq!(e.timeout, Duration::from_millis(500));
    assert_eq!((e.threshold, e.backoff, e.maxattempts), (5, secs(2), 4));
    assert_eq!(e.queue.size, 10);
    assert_eq!(e.queue.overflow, Overflow::DropNewest);
    assert!(e.queue.persistent && e.cacheevents);
    assert_eq!(e.format, NotifyFormat::CloudEvents);
    assert_eq!(e.signing.secretfiles.len(), 2);
    assert_eq!(e.ignore.actions, vec!["pull"]);
    assert!(n.endpoints[1].disabled);
    let shown = format!("{c:?}");
    assert!(!shown.contains("sekrit"), "{shown}");
}

#[test]
fn notifications_from_the_environment() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = dir.path().join("token");
    std::fs::write(&token, "Bearer fromfile\n").expect("write");
    let c = load_env(
        "notifications:\n  endpoints:\n    - name: a\n      url: http://a/\n",
        &[
            ("REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL", "http://b:1/x"),
            (
                "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_HEADERS_AUTHORIZATION_FILE",
                token.to_str().expect("utf-8"),
            ),
            (
                "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_QUEUE_PERSISTENT",
                "true",
            ),
            (
                "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_IGNORE_ACTIONS",
                "[pull]",
            ),
            ("REGISTRY_NOTIFICATIONS_ENDPOINTS_1_NAME", "b"),
            ("REGISTRY_NOTIFICATIONS_ENDPOINTS_1_URL", "https://b/"),
            ("REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES", "true"),
        ],
    )
    .expect("env");
    let e = &c.notifications.endpoints;
    assert_eq!(e[0].url, "http://b:1/x");
    assert_eq!(e[0].headers["authorization"][0].expose(), "Bearer fromfile");
    assert!(e[0].queue.persistent);
    assert_eq!(e[0].ignore.actions, vec!["pull"]);
    assert_eq!(e[1].name, "b");
    assert!(c.notifications.events.includereferences);
}

#[test]
fn notification_endpoints_are_validated() {
    let base = "notifications:\n  endpoints:\n    - name: a\n      url: http://a/\n";
    for (extra, key) in [
        ("      format: xml\n", "notifications.endpoints[0].format"),
        (
            "      actions: [upload]\n",
            "notifications.endpoints[0].actions[0]",
        ),
        (
            "      ignore:\n        actions: [bogus]\n",
            "notifications.endpoints[0].ignore.actions[0]",
        ),
        (
            "      queue:\n        size: 0\n",
            "notifications.endpoints[0].queue.size",
        ),
        (
            "      maxattempts: 0\n",
            "notifications.endpoints[0].maxattempts",
        ),
        (
            "      repositories: [\"/x\"]\n",
            "notifications.endpoints[0].repositories[0]",
        ),
        (
            "      headers:\n        \"bad header\": [x]\n",
            "notifications.endpoints[0].headers.bad header",
        ),
        (
            "    - name: a\n      url: http://b/\n",
            "notifications.endpoints[1].name",
        ),
    ] {
        let e = err(&format!("{base}{extra}"));
        assert_eq!(e.key(), Some(key), "{extra}: {e}");
    }
    let e = err("notifications:\n  endpoints:\n    - name: a\n      url: ftp://tok@x/\n");
    assert_eq!(e.key(), Some("notifications.endpoints[0].url"));
    assert!(!e.to_string().contains("tok@"), "{e}");
    let e = err("notifications:\n  endpoints:\n    - url: http://x/\n");
    assert_eq!(e.key(), Some("notifications.endpoints[0].name"));
    let e = err(
        "notifications:\n  endpoints:\n    - name: ../x\n      url: http://x/\n      queue:\n        persistent: true\n",
    );
    assert_eq!(e.key(), Some("notifications.endpoints[0].name"));
    // A disabled endpoint needs no URL, as in distribution.
    Config::from_yaml_str("notifications:\n  endpoints:\n    - name: a\n      disabled: true\n")
        .expect("disabled");
}
