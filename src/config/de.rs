//! Reading the checked YAML tree into [`Config`] with serde derive, and the
//! field readers the structs name in `#[serde(deserialize_with = "…")]`.
//!
//! Each reader takes the key's YAML value and returns its type, accepting the
//! forms distribution's files use (a number where a string is expected, `"5"`
//! where a number is, `yes`/`no`, one string for a list of one) and the units
//! of [`super::units`]. A reader fails with only a reason; [`read`] adds the
//! dotted key (from `serde_path_to_error`) and the value.
//!
//! Readers of string-like keys ask for a newtype named [`TEXT`] or [`SECRET`]:
//! the YAML deserializer ignores the name, while the schema tracer
//! ([`super::schema`]) learns from it that the key's environment variable
//! takes its text verbatim (and, for secrets, may come from a `_FILE`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde_yaml_ng::Value;

use super::schema::describe;
use super::{Config, ConfigError, LogFormat, LogLevel, PolicyMode, Secret, UiListener, units};

/// Newtype name of keys whose environment value is taken verbatim.
pub(super) const TEXT: &str = "stevedore::Text";
/// Newtype name of secrets: verbatim, and may be read from `REGISTRY_…_FILE`.
pub(super) const SECRET: &str = "stevedore::Secret";

/// Separates the parts of a reader's error message; never in YAML text.
const SEP: char = '\u{0}';

/// Builds the typed configuration from a tree whose keys [`super::schema::check`]
/// accepted. Null values and empty sections count as absent (so they keep their
/// defaults), except `auth.htpasswd`, `auth.token`, `auth.builtin` and `storage.s3`, which
/// select a kind of authentication or storage by their presence.
pub(super) fn read(tree: &Value) -> Result<Config, ConfigError> {
    let mut tree = tree.clone();
    alias_layerinfo(&mut tree)?;
    prune(&mut tree, "");
    serde_path_to_error::deserialize::<_, Config>(&tree).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().to_string();
        let mut parts = message.splitn(3, SEP);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(suffix), Some(value), Some(reason)) => {
                ConfigError::value(format!("{key}{suffix}"), value, reason)
            }
            _ => ConfigError::invalid(key, message),
        }
    })
}

/// `storage.cache.layerinfo` is distribution's older name of `blobdescriptor`.
fn alias_layerinfo(tree: &mut Value) -> Result<(), ConfigError> {
    let Some(Value::Mapping(cache)) = tree.get_mut("storage").and_then(|s| s.get_mut("cache"))
    else {
        return Ok(());
    };
    let Some(old) = cache.remove("layerinfo").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    match cache.get("blobdescriptor") {
        Some(new) if !new.is_null() && *new != old => Err(ConfigError::conflict(
            "storage.cache.blobdescriptor",
            "storage.cache.layerinfo",
            "layerinfo is the older name of blobdescriptor: set only one",
        )),
        _ => {
            cache.insert("blobdescriptor".into(), old);
            Ok(())
        }
    }
}

/// Drops null values and mappings left empty, so that they keep their defaults.
fn prune(value: &mut Value, path: &str) {
    match value {
        Value::Mapping(m) => {
            m.retain(|k, v| {
                let key = super::schema::join(path, k.as_str().unwrap_or(""));
                prune(v, &key);
                let selects = matches!(
                    key.as_str(),
                    "auth.htpasswd" | "auth.token" | "auth.builtin" | "storage.s3"
                );
                !(v.is_null() || (matches!(v, Value::Mapping(m) if m.is_empty()) && !selects))
            });
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| prune(v, path)),
        _ => {}
    }
}

/// A reader's error: `reason` about `value`, at the key plus `suffix`.
fn fail<E: de::Error>(suffix: &str, value: &Value, reason: impl fmt::Display) -> E {
    fail_shown(suffix, &describe(value), reason)
}

/// [`fail`] showing `shown` for the value.
fn fail_shown<E: de::Error>(suffix: &str, shown: &str, reason: impl fmt::Display) -> E {
    E::custom(format!("{suffix}{SEP}{shown}{SEP}{reason}"))
}

/// The key's YAML value, asked for as the newtype `name` ([`TEXT`], [`SECRET`]).
fn raw<'de, D: Deserializer<'de>>(d: D, name: &'static str) -> Result<Value, D::Error> {
    struct Raw;
    impl<'de> Visitor<'de> for Raw {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a value")
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            Value::deserialize(d)
        }
    }
    d.deserialize_newtype_struct(name, Raw)
}

/// A scalar as a string (numbers and booleans as written by YAML).
fn scalar<E: de::Error>(v: &Value, suffix: &str) -> Result<String, E> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(fail(suffix, v, "expected a string")),
    }
}

fn text_value<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar(&raw(d, TEXT)?, "")
}

/// A string.
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    text_value(d)
}

/// A string; empty means unset.
pub(super) fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(text_value(d)?).filter(|s| !s.trim().is_empty()))
}

/// A secret's text, verbatim (may come from `REGISTRY_…_FILE`).
pub(super) fn secret_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar(&raw(d, SECRET)?, "")
}

/// A secret; empty means unset.
pub(super) fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Some(Secret::deserialize(d)?).filter(|s| !s.expose().is_empty()))
}

/// Text read like a secret (verbatim, may come from `REGISTRY_…_FILE`) but not
/// hidden: the upstream usernames. Empty means unset.
pub(super) fn secret_plain<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(secret_text(d)?).filter(|s| !s.is_empty()))
}

/// `http.prefix`: `"/"` is stored as `""`.
pub(super) fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let p = text_value(d)?;
    Ok(if p == "/" { String::new() } else { p })
}

/// A file path.
pub(super) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    text_value(d).map(PathBuf::from)
}

/// A file path; empty means unset.
pub(super) fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(Some(text_value(d)?)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from))
}

/// `true`/`false` (also `yes`/`no`/`on`/`off` as strings).
pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    let word = match &v {
        Value::Bool(b) => return Ok(*b),
        Value::String(s) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    match word.as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(fail("", &v, "expected true or false")),
    }
}

/// [`flag`], unset when absent.
pub(super) fn opt_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    flag(d).map(Some)
}

/// A non-negative integer.
pub(super) fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| fail("", &v, "expected a non-negative integer"))
}

/// A finite, non-negative number.
pub(super) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite() && *n >= 0.0)
    .ok_or_else(|| fail("", &v, "expected a non-negative number"))
}

/// `redis.db`: a database number.
pub(super) fn db<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n >= 0)
    .ok_or_else(|| fail("", &v, "expected a database number (0, 1, …)"))
}

/// A duration ([`units::parse_duration`]); a YAML integer is seconds.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Number(n) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
            fail(
                "",
                &v,
                "expected a duration such as \"10s\" or \"168h\", or whole seconds",
            )
        }),
        Value::String(s) => units::parse_duration(s).map_err(|r| fail("", &v, r)),
        _ => Err(fail(
            "",
            &v,
            "expected a duration such as \"10s\" or \"168h\"",
        )),
    }
}

/// [`duration`], unset when absent.
pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A size in bytes ([`units::parse_size`]); a YAML integer is bytes.
pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| fail("", &v, "expected a size such as \"200GiB\"")),
        Value::String(s) => units::parse_size(s).map_err(|r| fail("", &v, r)),
        _ => Err(fail("", &v, "expected a size such as \"200GiB\"")),
    }
}

/// [`size`], unset when absent.
pub(super) fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

/// A listen address ([`units::parse_addr`]).
pub(super) fn addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let v = raw(d, TEXT)?;
    units::parse_addr(&scalar::<D::Error>(&v, "")?).map_err(|r| fail("", &v, r))
}

/// [`addr`], unset when absent.
pub(super) fn opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    addr(d).map(Some)
}

/// An upstream URL ([`units::parse_http_url`]), without trailing slashes; empty
/// means unset. A value holding credentials is not echoed in errors.
pub(super) fn url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = raw(d, TEXT)?;
    let s = scalar::<D::Error>(&v, "")?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    units::parse_http_url(&s).map(Some).map_err(|r| {
        if s.contains('@') {
            fail_shown("", "(redacted: contains credentials)", r)
        } else {
            fail("", &v, r)
        }
    })
}

/// [`url`] of a key that is required (checked by `validate`): empty when unset.
pub(super) fn url_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    url(d).map(Option::unwrap_or_default)
}

/// A list of strings; a single string counts as a list of one.
fn many<E: de::Error>(v: &Value) -> Result<Vec<String>, E> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| scalar(item, &format!("[{i}]")))
            .collect(),
        _ => scalar(v, "").map(|s| vec![s]),
    }
}

/// A list of strings; a single string counts as a list of one.
pub(super) fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    many(&Value::deserialize(d)?)
}

/// [`strings`], unset when absent.
pub(super) fn opt_strings<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    strings(d).map(Some)
}

/// A list of file paths; empty entries are dropped.
pub(super) fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(strings(d)?
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// Repository prefixes, each given the trailing `/` it must have.
pub(super) fn prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(strings(d)?
        .iter()
        .map(|s| units::normalize_prefix(s))
        .collect())
}

/// One repository prefix; empty means unset.
pub(super) fn opt_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(opt_text(d)?.map(|s| units::normalize_prefix(&s)))
}

/// A mapping of free-form keys, read by `T`.
fn map<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<BTreeMap<String, T>, D::Error> {
    BTreeMap::<String, T>::deserialize(d)
}

/// `log.fields`: free-form names to strings.
pub(super) fn text_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Text(String);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            text_value(d).map(Text)
        }
    }
    Ok(map::<D, Text>(d)?
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// `http.headers`: free-form names to lists of strings.
pub(super) fn list_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    struct Many(Vec<String>);
    impl<'de> Deserialize<'de> for Many {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            many(&Value::deserialize(d)?).map(Many)
        }
    }
    Ok(map::<D, Many>(d)?
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// Header names to lists of secret values (a single string counts as a list of one): the
/// notification endpoints' `headers`, which often carry tokens.
pub(super) fn secret_list_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<Secret>>, D::Error> {
    struct Many(Vec<Secret>);
    impl<'de> Deserialize<'de> for Many {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let values = many(&raw(d, SECRET)?)?;
            Ok(Many(values.into_iter().map(Secret::from).collect()))
        }
    }
    Ok(map::<D, Many>(d)?
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// A keyword of `T`, chosen by `pick` from its lowercase text.
pub(super) fn keyword<'de, D: Deserializer<'de>, T>(
    d: D,
    pick: fn(&str) -> Option<T>,
    expected: &str,
) -> Result<T, D::Error> {
    let v = raw(d, TEXT)?;
    let s = scalar::<D::Error>(&v, "")?;
    pick(s.trim().to_ascii_lowercase().as_str()).ok_or_else(|| fail("", &v, expected))
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pick = |s: &str| match s {
            "error" => Some(LogLevel::Error),
            "warn" | "warning" => Some(LogLevel::Warn),
            "info" => Some(LogLevel::Info),
            "debug" => Some(LogLevel::Debug),
            "trace" => Some(LogLevel::Trace),
            _ => None,
        };
        keyword(d, pick, "expected one of error, warn, info, debug, trace")
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pick = |s: &str| match s {
            "text" | "" => Some(LogFormat::Text),
            "json" | "logstash" => Some(LogFormat::Json),
            _ => None,
        };
        keyword(d, pick, "expected text, json or logstash")
    }
}

impl<'de> Deserialize<'de> for UiListener {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pick = |s: &str| match s {
            "main" => Some(UiListener::Main),
            "debug" => Some(UiListener::Debug),
            _ => None,
        };
        keyword(d, pick, "must be main or debug")
    }
}

impl<'de> Deserialize<'de> for PolicyMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pick = |s: &str| match s {
            "enforce" => Some(PolicyMode::Enforce),
            "audit" => Some(PolicyMode::Audit),
            _ => None,
        };
        keyword(d, pick, "must be enforce or audit")
    }
}
