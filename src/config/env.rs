//! The `REGISTRY_*` environment overlay, as distribution does it.
//!
//! `REGISTRY_HTTP_ADDR` sets `http.addr`: the name after `REGISTRY_` is split
//! on `_`, lowercased, and must name a key of the schema (configuration keys
//! never contain `_`). Values are parsed as YAML (`true`, `5000`, `10s`,
//! `[a/, b/]`), except for string keys, which take the text verbatim. A
//! variable may name a whole section (`REGISTRY_AUTH='{htpasswd: {...}}'`),
//! a key of a free-form map (`REGISTRY_LOG_FIELDS_SERVICE=registry`), or an
//! entry of `proxy.upstreams` by index (`REGISTRY_PROXY_UPSTREAMS_0_PASSWORD`).
//! Missing sections are created.
//!
//! Secrets (`http.secret`, `http.debug.token`, `proxy.username`, `proxy.password` and the
//! upstreams' `username`/`password`) may come from a file instead:
//! `REGISTRY_PROXY_PASSWORD_FILE=/run/secrets/hub` reads the file and drops
//! trailing newlines.
//!
//! A `REGISTRY_*` variable that names no key stops start-up. The one
//! exception is the service-link variables Kubernetes puts in every pod of a
//! namespace with a Service called `registry` (`REGISTRY_SERVICE_HOST`,
//! `REGISTRY_SERVICE_PORT[_*]`, `REGISTRY_PORT[_*]`): they are ignored.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_yaml_ng::Value;

use super::ConfigError;
use super::schema::{self, EnvForm, Fields, Node};

const PREFIX: &str = "REGISTRY_";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Index(usize),
    Key(String),
}

/// Which key an environment variable set: used to point errors at it.
#[derive(Debug, Clone)]
pub(super) struct SetByEnv {
    key: String,
    var: String,
}

/// Applies the `REGISTRY_*` variables among `vars` to `tree`.
pub(super) fn overlay(
    tree: &mut Value,
    vars: Vec<(String, String)>,
) -> Result<Vec<SetByEnv>, ConfigError> {
    let names: BTreeSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let mut entries: Vec<(Vec<Seg>, Value, String)> = Vec::new();
    for (name, raw) in &vars {
        if !name.starts_with(PREFIX) || is_kubernetes_service_link(name) {
            continue;
        }
        let secret_file = name
            .strip_suffix("_FILE")
            .and_then(|base| match resolve(base) {
                Ok((segs, EnvForm::Secret)) => Some((base, segs)),
                _ => None,
            });
        if let Some((base, segs)) = secret_file {
            if names.contains(base) {
                return Err(ConfigError::invalid(
                    dotted(&segs),
                    format!("both {base} and {name} are set; set only one"),
                ));
            }
            let path = PathBuf::from(raw);
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                    var: name.clone(),
                    path,
                    source,
                })?;
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            entries.push((segs, Value::String(text), name.clone()));
            continue;
        }
        let (segs, kind) = resolve(name)?;
        let value = match kind {
            EnvForm::Str | EnvForm::Secret => Value::String(raw.clone()),
            EnvForm::Yaml => {
                serde_yaml_ng::from_str::<Value>(raw).map_err(|e| ConfigError::FromEnv {
                    var: name.clone(),
                    source: Box::new(ConfigError::value(
                        dotted(&segs),
                        format!("{raw:?}"),
                        format!("not a YAML value: {e}"),
                    )),
                })?
            }
        };
        entries.push((segs, value, name.clone()));
    }
    // Whole sections first, then the keys inside them; list indexes in order.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut set_by_env = Vec::with_capacity(entries.len());
    for (segs, value, var) in entries {
        set(tree, &segs, value).map_err(|e| ConfigError::FromEnv {
            var: var.clone(),
            source: Box::new(e),
        })?;
        // `REGISTRY_AUTH=htpasswd` followed by `REGISTRY_AUTH_HTPASSWD_PATH`.
        schema::normalize(tree);
        set_by_env.push(SetByEnv {
            key: dotted(&segs),
            var,
        });
    }
    Ok(set_by_env)
}

/// Points an error about a key that an environment variable set at that
/// variable.
pub(super) fn attribute(err: ConfigError, set_by_env: &[SetByEnv]) -> ConfigError {
    if matches!(err, ConfigError::FromEnv { .. }) {
        return err;
    }
    let Some(key) = err.key() else { return err };
    let within = |o: &&SetByEnv| {
        key == o.key
            || key
                .strip_prefix(o.key.as_str())
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    };
    match set_by_env.iter().filter(within).max_by_key(|o| o.key.len()) {
        Some(o) => ConfigError::FromEnv {
            var: o.var.clone(),
            source: Box::new(err),
        },
        None => err,
    }
}

/// Maps a variable name onto a key path and how its value is parsed.
fn resolve(name: &str) -> Result<(Vec<Seg>, EnvForm), ConfigError> {
    let rest = name.strip_prefix(PREFIX).unwrap_or(name);
    let words: Vec<String> = rest.split('_').map(str::to_ascii_lowercase).collect();
    let unknown = |segs: &[Seg], at: usize, suggestion: Option<&str>| {
        let mut key = dotted(segs);
        for w in &words[at..] {
            key = schema::join(&key, w);
        }
        let suggestion = suggestion.map(|s| {
            let mut parts: Vec<String> = segs
                .iter()
                .map(|s| match s {
                    Seg::Key(k) => k.to_ascii_uppercase(),
                    Seg::Index(i) => i.to_string(),
                })
                .collect();
            parts.push(s.to_ascii_uppercase());
            parts.extend(words[at + 1..].iter().map(|w| w.to_ascii_uppercase()));
            format!("{PREFIX}{}", parts.join("_"))
        });
        ConfigError::UnknownEnv {
            var: name.to_string(),
            key,
            suggestion,
        }
    };
    if words.iter().any(String::is_empty) {
        return Err(unknown(&[], 0, None));
    }
    let mut fields: &Fields = schema::root();
    let mut segs = Vec::new();
    let mut i = 0;
    loop {
        let word = words[i].as_str();
        let Some((key, node)) = fields.iter().find(|(n, _)| n == word) else {
            let hint = schema::suggest(word, fields.iter().map(|(n, _)| n.as_str()));
            return Err(unknown(&segs, i, hint));
        };
        segs.push(Seg::Key(key.clone()));
        i += 1;
        let done = i == words.len();
        match node {
            Node::Section(f) => {
                if done {
                    return Ok((segs, EnvForm::Yaml));
                }
                fields = f;
            }
            Node::Leaf(kind) => {
                return if done {
                    Ok((segs, *kind))
                } else {
                    Err(unknown(&segs, i, None))
                };
            }
            Node::Map(kind) => {
                if done {
                    return Ok((segs, EnvForm::Yaml));
                }
                segs.push(Seg::Key(words[i..].join("_")));
                return Ok((segs, *kind));
            }
            Node::List(f) => {
                if done {
                    return Ok((segs, EnvForm::Yaml));
                }
                let Ok(index) = words[i].parse::<usize>() else {
                    return Err(unknown(&segs, i, None));
                };
                segs.push(Seg::Index(index));
                i += 1;
                if i == words.len() {
                    return Ok((segs, EnvForm::Yaml));
                }
                fields = f;
            }
            Node::Ignored => {
                segs.extend(words[i..].iter().map(|w| Seg::Key(w.clone())));
                return Ok((segs, EnvForm::Yaml));
            }
            Node::Unsupported(hint) | Node::Selector(hint) => {
                return Err(ConfigError::FromEnv {
                    var: name.to_string(),
                    source: Box::new(ConfigError::Unsupported {
                        key: dotted(&segs),
                        hint: (*hint).to_string(),
                    }),
                });
            }
        }
    }
}

/// Sets `value` at `segs`, creating mappings and list entries as needed.
fn set(tree: &mut Value, segs: &[Seg], value: Value) -> Result<(), ConfigError> {
    let mut cur = tree;
    let mut value = Some(value);
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let here = dotted(&segs[..i]);
        match seg {
            Seg::Key(k) => {
                if cur.is_null() {
                    *cur = Value::Mapping(Default::default());
                }
                let Value::Mapping(m) = cur else {
                    return Err(ConfigError::value(
                        here,
                        schema::describe(cur),
                        "expected a mapping",
                    ));
                };
                let k = Value::String(k.clone());
                if last {
                    m.insert(k, value.take().unwrap_or(Value::Null));
                    return Ok(());
                }
                cur = m.entry(k).or_insert(Value::Null);
            }
            Seg::Index(n) => {
                if cur.is_null() {
                    *cur = Value::Sequence(Vec::new());
                }
                let Value::Sequence(items) = cur else {
                    return Err(ConfigError::value(
                        here,
                        schema::describe(cur),
                        "expected a list",
                    ));
                };
                if *n > items.len() {
                    return Err(ConfigError::invalid(
                        here,
                        format!(
                            "the list has {} entries, so index {n} cannot be set (use index {} to add one)",
                            items.len(),
                            items.len()
                        ),
                    ));
                }
                if *n == items.len() {
                    items.push(Value::Null);
                }
                if last {
                    items[*n] = value.take().unwrap_or(Value::Null);
                    return Ok(());
                }
                cur = &mut items[*n];
            }
        }
    }
    Ok(())
}

fn dotted(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => out = schema::join(&out, k),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Kubernetes service links for a Service named `registry`:
/// `REGISTRY_SERVICE_HOST`, `REGISTRY_SERVICE_PORT`, `REGISTRY_SERVICE_PORT_<NAME>`,
/// `REGISTRY_PORT`, `REGISTRY_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]`.
fn is_kubernetes_service_link(name: &str) -> bool {
    let rest = &name[PREFIX.len()..];
    if matches!(rest, "SERVICE_HOST" | "SERVICE_PORT" | "PORT") || rest.starts_with("SERVICE_PORT_")
    {
        return true;
    }
    let parts: Vec<&str> = rest.split('_').collect();
    parts.len() >= 3
        && parts[0] == "PORT"
        && !parts[1].is_empty()
        && parts[1].bytes().all(|b| b.is_ascii_digit())
        && matches!(parts[2], "TCP" | "UDP" | "SCTP")
        && (parts.len() == 3 || (parts.len() == 4 && matches!(parts[3], "PROTO" | "PORT" | "ADDR")))
}
