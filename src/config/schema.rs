//! The tree of configuration keys stevedore knows, and the structural check
//! of a parsed YAML tree against it.
//!
//! The check only rejects keys: unknown ones (typos, with a "did you mean"
//! suggestion) and ones distribution has but stevedore does not implement.
//! Value types are checked later, when the typed `Config` is built.
//!
//! An unsupported key is tolerated when its value configures nothing: null,
//! `false`, `""`, an empty list, or a mapping of such values (so
//! `compatibility: {schema1: {enabled: false}}` loads) — except storage
//! drivers and auth kinds, which are selected by their mere presence.

use serde_yaml_ng::Value;

use super::ConfigError;

/// How an environment variable's text becomes a value for a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Taken verbatim as a string (so `0.10` or `0123` stay as written).
    Str,
    /// Like `Str`, and may also be read from a file with `REGISTRY_…_FILE`.
    Secret,
    /// Parsed as YAML (booleans, numbers, durations, lists).
    Yaml,
}

pub(super) type Fields = &'static [(&'static str, Node)];

pub(super) enum Node {
    /// A mapping with the given known keys.
    Section(Fields),
    /// A single value.
    Leaf(Kind),
    /// A mapping with free-form keys whose values are of the given kind.
    Map(Kind),
    /// A list of mappings with the given known keys.
    List(Fields),
    /// Accepted for compatibility with distribution; has no effect.
    Ignored,
    /// Known to distribution, not implemented by stevedore; the text is a hint.
    Unsupported(&'static str),
    /// Like `Unsupported`, but its mere presence selects something (a storage
    /// driver, an auth kind), so even an empty value is rejected.
    Selector(&'static str),
}

use Kind::{Secret, Str, Yaml};
use Node::{Ignored, Leaf, List, Map, Section, Selector, Unsupported};

const DRIVER: &str =
    "stevedore stores content on the local filesystem only: use storage.filesystem";
const NONE: &str = "";

/// Every key of a stevedore configuration file.
pub(super) static ROOT: Fields = &[
    ("version", Leaf(Str)),
    (
        "log",
        Section(&[
            ("level", Leaf(Str)),
            ("formatter", Leaf(Str)),
            ("fields", Map(Str)),
            ("accesslog", Section(&[("disabled", Leaf(Yaml))])),
            ("hooks", Unsupported(NONE)),
            ("reportcaller", Unsupported(NONE)),
        ]),
    ),
    (
        "loglevel",
        Unsupported("it is deprecated in distribution too: use log.level"),
    ),
    (
        "storage",
        Section(&[
            (
                "filesystem",
                Section(&[("rootdirectory", Leaf(Str)), ("maxthreads", Ignored)]),
            ),
            ("delete", Section(&[("enabled", Leaf(Yaml))])),
            (
                "maintenance",
                Section(&[
                    (
                        "uploadpurging",
                        Section(&[
                            ("enabled", Leaf(Yaml)),
                            ("age", Leaf(Yaml)),
                            ("interval", Leaf(Yaml)),
                            ("dryrun", Leaf(Yaml)),
                        ]),
                    ),
                    ("readonly", Section(&[("enabled", Leaf(Yaml))])),
                ]),
            ),
            (
                "cache",
                Section(&[
                    ("blobdescriptor", Leaf(Str)),
                    // distribution's older name of `blobdescriptor`.
                    ("layerinfo", Leaf(Str)),
                    ("blobdescriptorsize", Leaf(Yaml)),
                ]),
            ),
            ("tag", Ignored),
            ("redirect", Unsupported(NONE)),
            ("inmemory", Selector(DRIVER)),
            ("s3", Selector(DRIVER)),
            ("azure", Selector(DRIVER)),
            ("gcs", Selector(DRIVER)),
            ("swift", Selector(DRIVER)),
            ("oss", Selector(DRIVER)),
        ]),
    ),
    (
        "auth",
        Section(&[
            (
                "htpasswd",
                Section(&[("realm", Leaf(Str)), ("path", Leaf(Str))]),
            ),
            (
                "token",
                Section(&[
                    ("realm", Leaf(Str)),
                    ("service", Leaf(Str)),
                    ("issuer", Leaf(Str)),
                    ("rootcertbundle", Leaf(Str)),
                    ("autoredirect", Leaf(Yaml)),
                    ("autoredirectpath", Unsupported(NONE)),
                    ("jwks", Unsupported(NONE)),
                    ("signingalgorithms", Unsupported(NONE)),
                ]),
            ),
            (
                "policy",
                Section(&[
                    ("anonymouspull", Leaf(Yaml)),
                    (
                        "rules",
                        List(&[
                            ("repository", Leaf(Str)),
                            ("pull", Leaf(Yaml)),
                            ("push", Leaf(Yaml)),
                            ("delete", Leaf(Yaml)),
                        ]),
                    ),
                ]),
            ),
            ("silly", Selector(NONE)),
        ]),
    ),
    (
        "http",
        Section(&[
            ("addr", Leaf(Str)),
            ("net", Leaf(Str)),
            ("prefix", Leaf(Str)),
            ("host", Leaf(Str)),
            ("secret", Leaf(Secret)),
            ("relativeurls", Leaf(Yaml)),
            ("draintimeout", Leaf(Yaml)),
            ("headers", Map(Yaml)),
            (
                "debug",
                Section(&[
                    ("addr", Leaf(Str)),
                    ("token", Leaf(Secret)),
                    (
                        "prometheus",
                        Section(&[("enabled", Leaf(Yaml)), ("path", Leaf(Str))]),
                    ),
                ]),
            ),
            (
                "tls",
                Section(&[
                    ("certificate", Leaf(Str)),
                    ("key", Leaf(Str)),
                    ("clientcas", Leaf(Yaml)),
                    ("minimumtls", Leaf(Str)),
                    ("ciphersuites", Unsupported(NONE)),
                    (
                        "letsencrypt",
                        Unsupported("use http.tls.certificate and http.tls.key"),
                    ),
                ]),
            ),
            ("http2", Section(&[("disabled", Leaf(Yaml))])),
            (
                "limits",
                Section(&[
                    ("maxconns", Leaf(Yaml)),
                    ("maxconnsperclient", Leaf(Yaml)),
                    ("requestspersecond", Leaf(Yaml)),
                    ("burst", Leaf(Yaml)),
                    ("headertimeout", Leaf(Yaml)),
                    ("bodytimeout", Leaf(Yaml)),
                    ("maxheaderbytes", Leaf(Yaml)),
                    ("maxheaders", Leaf(Yaml)),
                    ("maxstreams", Leaf(Yaml)),
                ]),
            ),
        ]),
    ),
    (
        "proxy",
        Section(&[
            ("remoteurl", Leaf(Str)),
            ("username", Leaf(Secret)),
            ("password", Leaf(Secret)),
            ("ttl", Leaf(Yaml)),
            ("tagttl", Leaf(Yaml)),
            ("timeout", Leaf(Yaml)),
            ("stalltimeout", Leaf(Yaml)),
            ("connecttimeout", Leaf(Yaml)),
            ("revalidatetimeout", Leaf(Yaml)),
            ("offline", Leaf(Yaml)),
            ("maxfetches", Leaf(Yaml)),
            ("breakerthreshold", Leaf(Yaml)),
            ("breakermaxbackoff", Leaf(Yaml)),
            ("maxsize", Leaf(Yaml)),
            ("cafile", Leaf(Str)),
            ("localprefixes", Leaf(Yaml)),
            ("allow", Leaf(Yaml)),
            ("deny", Leaf(Yaml)),
            (
                "policy",
                Section(&[("mode", Leaf(Str)), ("contact", Leaf(Str))]),
            ),
            (
                "warm",
                Section(&[("file", Leaf(Str)), ("interval", Leaf(Yaml))]),
            ),
            ("cooldown", Leaf(Yaml)),
            // Not a distribution key, but distribution's own config-cache.yml ships it and
            // distribution ignores it (its key is `ttl`): so does stevedore.
            ("cacheTTL", Ignored),
            (
                "upstreams",
                List(&[
                    ("name", Leaf(Str)),
                    ("remoteurl", Leaf(Str)),
                    ("username", Leaf(Secret)),
                    ("password", Leaf(Secret)),
                    ("prefix", Leaf(Str)),
                    ("allow", Leaf(Yaml)),
                    ("deny", Leaf(Yaml)),
                    ("cooldown", Leaf(Yaml)),
                ]),
            ),
        ]),
    ),
    (
        "health",
        Section(&[
            // The registry:2 image's stock config.yml enables it.
            ("storagedriver", Ignored),
            ("file", Unsupported(NONE)),
            ("http", Unsupported(NONE)),
            ("tcp", Unsupported(NONE)),
        ]),
    ),
    ("notifications", Unsupported(NONE)),
    (
        "redis",
        Section(&[
            ("addr", Leaf(Str)),
            ("password", Leaf(Secret)),
            ("db", Leaf(Yaml)),
            ("dialtimeout", Leaf(Yaml)),
            ("readtimeout", Leaf(Yaml)),
            ("writetimeout", Leaf(Yaml)),
            (
                "pool",
                Section(&[
                    ("maxidle", Leaf(Yaml)),
                    ("maxactive", Leaf(Yaml)),
                    ("idletimeout", Leaf(Yaml)),
                ]),
            ),
            (
                "tls",
                Section(&[
                    ("enabled", Leaf(Yaml)),
                    ("certificate", Leaf(Str)),
                    ("key", Leaf(Str)),
                    ("clientcas", Leaf(Yaml)),
                ]),
            ),
        ]),
    ),
    ("reporting", Unsupported(NONE)),
    ("middleware", Unsupported(NONE)),
    ("validation", Unsupported(NONE)),
    ("compatibility", Unsupported(NONE)),
    ("catalog", Unsupported(NONE)),
    ("policy", Unsupported(NONE)),
];

/// Rewrites distribution's short forms `storage: filesystem` and
/// `auth: htpasswd` into `{filesystem: {}}` / `{htpasswd: {}}`, and an empty
/// document into an empty mapping.
pub(super) fn normalize(root: &mut Value) {
    if root.is_null() {
        *root = Value::Mapping(Default::default());
    }
    if let Value::Mapping(top) = root {
        for section in ["storage", "auth"] {
            if let Some(Value::String(name)) = top.get(section) {
                let mut m = serde_yaml_ng::Mapping::new();
                m.insert(
                    Value::String(name.clone()),
                    Value::Mapping(Default::default()),
                );
                top.insert(Value::String(section.into()), Value::Mapping(m));
            }
        }
    }
}

/// Checks that every key of `root` is known and supported.
pub(super) fn check(root: &Value) -> Result<(), ConfigError> {
    if !matches!(root, Value::Mapping(_)) {
        return Err(ConfigError::value(
            "(top level)",
            describe(root),
            "a configuration must be a YAML mapping",
        ));
    }
    check_section(root, ROOT, "")
}

fn check_node(value: &Value, node: &Node, path: &str) -> Result<(), ConfigError> {
    match node {
        Section(fields) => check_section(value, fields, path),
        List(fields) => match value {
            Value::Null => Ok(()),
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| check_section(item, fields, &format!("{path}[{i}]"))),
            other => Err(ConfigError::value(path, describe(other), "expected a list")),
        },
        Leaf(_) | Map(_) | Ignored => Ok(()),
        Selector(hint) => Err(ConfigError::Unsupported {
            key: path.to_string(),
            hint: (*hint).to_string(),
        }),
        Unsupported(hint) => {
            if inert(value) {
                Ok(())
            } else {
                Err(ConfigError::Unsupported {
                    key: path.to_string(),
                    hint: (*hint).to_string(),
                })
            }
        }
    }
}

fn check_section(value: &Value, fields: Fields, path: &str) -> Result<(), ConfigError> {
    let map = match value {
        Value::Null => return Ok(()),
        Value::Mapping(m) => m,
        other => {
            return Err(ConfigError::value(
                path,
                describe(other),
                "expected a mapping of keys",
            ));
        }
    };
    for (k, v) in map {
        let Value::String(name) = k else {
            return Err(ConfigError::value(
                path,
                describe(k),
                "configuration keys must be strings",
            ));
        };
        let key = join(path, name);
        match fields.iter().find(|(n, _)| n == name) {
            Some((_, child)) => check_node(v, child, &key)?,
            None => {
                return Err(ConfigError::UnknownKey {
                    suggestion: suggest(name, fields.iter().map(|(n, _)| *n))
                        .map(|s| join(path, s)),
                    key,
                });
            }
        }
    }
    Ok(())
}

/// True when a value configures nothing.
fn inert(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.values().all(inert),
        _ => false,
    }
}

/// `a.b` + `c` → `a.b.c`; `` + `c` → `c`.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A short rendering of a value for error messages.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "(a list)".into(),
        Value::Mapping(_) => "(a mapping)".into(),
        Value::Tagged(t) => format!("(a value tagged {})", t.tag),
    }
}

/// The closest candidate to `word`, if it is close enough to be a typo.
pub(super) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&word, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len().max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
