//! The schema of a configuration file: every key, derived from the
//! [`Config`](super::Config) structs, plus the distribution keys stevedore
//! accepts without effect or rejects as unsupported ([`EXTRA`]); and the
//! check of a parsed YAML tree against it.
//!
//! The keys are learnt by *tracing*: the structs are deserialized from a
//! [`Tracer`] that answers no value but records what each field asks for (a
//! struct, a list, a map, or a leaf: verbatim text, a secret, or YAML), one
//! leaf per pass. So the schema cannot drift from the structs.
//!
//! The check only rejects keys: unknown ones (typos, with a "did you mean"
//! suggestion) and ones distribution has but stevedore does not implement.
//! Value types are checked later, when the typed `Config` is read.
//!
//! An unsupported key is tolerated when its value configures nothing: null,
//! `false`, `""`, an empty list, or a mapping of such values (so
//! `compatibility: {schema1: {enabled: false}}` loads) — except storage
//! drivers and auth kinds, which are selected by their mere presence.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value;

use super::de::{SECRET, TEXT};
use super::{Config, ConfigError};

/// How an environment variable's text becomes a value for a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvForm {
    /// Taken verbatim as a string (so `0.10` or `0123` stay as written).
    Str,
    /// Like `Str`, and may also be read from a file with `REGISTRY_…_FILE`.
    Secret,
    /// Parsed as YAML (booleans, numbers, durations, lists).
    Yaml,
}

pub(super) type Fields = [(String, Node)];

#[derive(Debug)]
pub(super) enum Node {
    /// A mapping with the given known keys.
    Section(Vec<(String, Node)>),
    /// A single value.
    Leaf(EnvForm),
    /// A mapping with free-form keys whose values are of the given kind.
    Map(EnvForm),
    /// A list of mappings with the given known keys.
    List(Vec<(String, Node)>),
    /// Accepted for compatibility with distribution; has no effect.
    Ignored,
    /// Known to distribution, not implemented by stevedore; the text is a hint.
    Unsupported(&'static str),
    /// Like `Unsupported`, but its mere presence selects something (a storage
    /// driver, an auth kind), so even an empty value is rejected.
    Selector(&'static str),
}

use Node::{Ignored, Leaf, List, Map, Section, Selector, Unsupported};

const DRIVER: &str = "stevedore stores content on the local filesystem or in S3: use storage.filesystem or storage.s3";
const NONE: &str = "";

/// Distribution's keys that no struct field reads: accepted without effect, or
/// rejected as not supported (yet).
pub(super) const EXTRA: &[(&str, Node)] = &[
    ("log.hooks", Unsupported(NONE)),
    ("log.reportcaller", Unsupported(NONE)),
    (
        "loglevel",
        Unsupported("it is deprecated in distribution too: use log.level"),
    ),
    ("storage.filesystem.maxthreads", Ignored),
    // distribution's older name of `blobdescriptor` (renamed when read).
    ("storage.cache.layerinfo", Leaf(EnvForm::Str)),
    ("storage.tag", Ignored),
    ("storage.inmemory", Selector(DRIVER)),
    // stevedore writes each blob once and never copies objects.
    ("storage.s3.multipartcopychunksize", Ignored),
    ("storage.s3.multipartcopymaxconcurrency", Ignored),
    ("storage.s3.multipartcopythresholdsize", Ignored),
    ("storage.azure", Selector(DRIVER)),
    ("storage.gcs", Selector(DRIVER)),
    ("storage.swift", Selector(DRIVER)),
    ("storage.oss", Selector(DRIVER)),
    ("auth.token.autoredirectpath", Unsupported(NONE)),
    ("auth.token.jwks", Unsupported(NONE)),
    ("auth.token.signingalgorithms", Unsupported(NONE)),
    ("auth.silly", Selector(NONE)),
    ("http.tls.ciphersuites", Unsupported(NONE)),
    (
        "http.tls.letsencrypt",
        Unsupported("use http.tls.certificate and http.tls.key"),
    ),
    // Not a distribution key, but distribution's own config-cache.yml ships it and
    // distribution ignores it (its key is `ttl`): so does stevedore.
    ("proxy.cacheTTL", Ignored),
    // The registry:2 image's stock config.yml enables it.
    ("health.storagedriver", Ignored),
    ("health.file", Unsupported(NONE)),
    ("health.http", Unsupported(NONE)),
    ("health.tcp", Unsupported(NONE)),
    ("reporting", Unsupported(NONE)),
    ("middleware", Unsupported(NONE)),
    ("validation", Unsupported(NONE)),
    ("compatibility", Unsupported(NONE)),
    ("catalog", Unsupported(NONE)),
    ("policy", Unsupported(NONE)),
];

/// Every key of a stevedore configuration file.
pub(super) fn root() -> &'static Fields {
    static ROOT: OnceLock<Vec<(String, Node)>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut root = trace();
        for (path, node) in EXTRA {
            insert(&mut root, path, node);
        }
        root
    })
}

/// Adds a copy of `node` at dotted `path`, creating sections on the way.
fn insert(fields: &mut Vec<(String, Node)>, path: &str, node: &Node) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let Some(rest) = rest else {
        let copy = match node {
            Leaf(k) => Leaf(*k),
            Ignored => Ignored,
            Unsupported(h) => Unsupported(h),
            Selector(h) => Selector(h),
            Section(_) | Map(_) | List(_) => unreachable!("EXTRA holds leaves only"),
        };
        fields.push((head.to_string(), copy));
        return;
    };
    if !fields.iter().any(|(n, _)| n == head) {
        fields.push((head.to_string(), Section(Vec::new())));
    }
    match fields.iter_mut().find(|(n, _)| n == head) {
        Some((_, Section(inner))) => insert(inner, rest, node),
        _ => unreachable!("EXTRA path {path} goes through a non-section"),
    }
}

/// What one traced field asked for.
enum Shape {
    Struct(&'static [&'static str]),
    Seq,
    Map,
    Leaf(EnvForm),
}

/// Shapes by path (`a.b`, list items `a[]`, map values `a{}`).
#[derive(Default)]
struct Shapes(BTreeMap<String, Shape>);

impl Shapes {
    /// Whether `path` and everything under it is known.
    fn complete(&self, path: &str) -> bool {
        match self.0.get(path) {
            None => false,
            Some(Shape::Leaf(_)) => true,
            Some(Shape::Struct(fields)) => fields.iter().all(|f| self.complete(&join(path, f))),
            Some(Shape::Seq) => self.complete(&format!("{path}[]")),
            Some(Shape::Map) => self.complete(&format!("{path}{{}}")),
        }
    }

    fn node(&self, path: &str) -> Node {
        match &self.0[path] {
            Shape::Struct(fields) => Section(self.fields(path, fields)),
            Shape::Seq => match &self.0[&format!("{path}[]")] {
                Shape::Struct(fields) => List(self.fields(&format!("{path}[]"), fields)),
                _ => Leaf(EnvForm::Yaml),
            },
            Shape::Map => match &self.0[&format!("{path}{{}}")] {
                Shape::Leaf(kind) => Map(*kind),
                _ => Map(EnvForm::Yaml),
            },
            Shape::Leaf(kind) => Leaf(*kind),
        }
    }

    fn fields(&self, path: &str, fields: &[&str]) -> Vec<(String, Node)> {
        fields
            .iter()
            .map(|f| (f.to_string(), self.node(&join(path, f))))
            .collect()
    }
}

/// Learns the keys of [`Config`]: each pass records one more leaf and stops.
fn trace() -> Vec<(String, Node)> {
    let shapes = RefCell::new(Shapes::default());
    loop {
        let known = shapes.borrow().0.len();
        let tracer = Tracer {
            shapes: &shapes,
            path: String::new(),
        };
        match Config::deserialize(tracer) {
            Ok(_) => break,
            Err(Stop) => assert!(
                shapes.borrow().0.len() > known,
                "tracing the configuration structs made no progress"
            ),
        }
    }
    let shapes = shapes.into_inner();
    match shapes.node("") {
        Section(fields) => fields,
        _ => unreachable!("Config is a struct"),
    }
}

/// The tracer's only error: a leaf was recorded.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("traced")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

struct Tracer<'a> {
    shapes: &'a RefCell<Shapes>,
    path: String,
}

impl Tracer<'_> {
    fn record(&self, shape: Shape) {
        self.shapes
            .borrow_mut()
            .0
            .entry(self.path.clone())
            .or_insert(shape);
    }

    fn leaf<T>(self, kind: EnvForm) -> Result<T, Stop> {
        self.record(Shape::Leaf(kind));
        Err(Stop)
    }

    fn child(&self, path: String) -> Tracer<'_> {
        Tracer {
            shapes: self.shapes,
            path,
        }
    }
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.leaf(EnvForm::Yaml)
    }

    fn deserialize_str<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.leaf(EnvForm::Str)
    }

    fn deserialize_string<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.leaf(EnvForm::Str)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match name {
            TEXT => self.leaf(EnvForm::Str),
            SECRET => self.leaf(EnvForm::Secret),
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record(Shape::Seq);
        let item = format!("{}[]", self.path);
        visitor.visit_seq(One(self.child(item)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record(Shape::Map);
        let value = format!("{}{{}}", self.path);
        visitor.visit_map(One(self.child(value)))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.record(Shape::Struct(fields));
        visitor.visit_map(StructFields {
            tracer: self,
            fields,
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A list or map with one item (or entry), traced until complete.
struct One<'a>(Tracer<'a>);

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        if self.0.shapes.borrow().complete(&self.0.path) {
            return Ok(None);
        }
        let path = self.0.path.clone();
        seed.deserialize(self.0.child(path)).map(Some)
    }
}

impl<'de> MapAccess<'de> for One<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        if self.0.shapes.borrow().complete(&self.0.path) {
            return Ok(None);
        }
        seed.deserialize(de::value::BorrowedStrDeserializer::new("name"))
            .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Stop> {
        let path = self.0.path.clone();
        seed.deserialize(self.0.child(path))
    }
}

/// A struct's fields, yielding the first one not yet complete.
struct StructFields<'a> {
    tracer: Tracer<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for StructFields<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        while let Some(field) = self.fields.get(self.next) {
            if !self
                .tracer
                .shapes
                .borrow()
                .complete(&join(&self.tracer.path, field))
            {
                return seed
                    .deserialize(de::value::BorrowedStrDeserializer::new(field))
                    .map(Some);
            }
            self.next += 1;
        }
        Ok(None)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Stop> {
        let field = self.fields[self.next];
        self.next += 1;
        let path = join(&self.tracer.path, field);
        seed.deserialize(self.tracer.child(path))
    }
}

/// Dotted paths of every key the structs read (the keys of list items under
/// the list's path), sections included: what `config/default.yml` must show.
#[cfg(test)]
pub(super) fn keys() -> Vec<String> {
    fn walk(fields: &Fields, path: &str, out: &mut Vec<String>) {
        for (name, node) in fields {
            let key = join(path, name);
            if EXTRA.iter().any(|(p, _)| *p == key) {
                continue;
            }
            match node {
                Section(inner) | List(inner) => {
                    let mut sub = Vec::new();
                    walk(inner, &key, &mut sub);
                    if !sub.is_empty() {
                        out.push(key);
                        out.append(&mut sub);
                    }
                }
                Leaf(_) | Map(_) => out.push(key),
                Ignored | Unsupported(_) | Selector(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(root(), "", &mut out);
    out
}

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
    check_section(root, self::root(), "")?;
    one_storage_driver(root)
}

/// `storage.filesystem` and `storage.s3` are two drivers: one only, as in distribution.
fn one_storage_driver(root: &Value) -> Result<(), ConfigError> {
    let Some(Value::Mapping(storage)) = root.get("storage") else {
        return Ok(());
    };
    if storage.contains_key("filesystem") && storage.contains_key("s3") {
        return Err(ConfigError::invalid(
            "storage.s3",
            "storage.filesystem is given too: choose one storage driver (with s3, the local \
             cache of index and staged writes is storage.s3.cachedirectory)",
        ));
    }
    Ok(())
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

fn check_section(value: &Value, fields: &Fields, path: &str) -> Result<(), ConfigError> {
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
                    suggestion: suggest(name, fields.iter().map(|(n, _)| n.as_str()))
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
