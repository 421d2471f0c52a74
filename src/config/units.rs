//! Parsing of the value forms used in the configuration: durations, sizes,
//! listen addresses, upstream URLs and repository-name prefixes.
//!
//! These functions only parse text; they know nothing about keys. Their
//! `Err(String)` is a reason that the caller wraps with the key and value.
//!
//! Forms accepted:
//!
//! * **Durations** — Go's `time.ParseDuration` syntax as distribution uses it:
//!   a sequence of decimal numbers with a unit each, `ns`, `us` (`µs`), `ms`,
//!   `s`, `m`, `h` (`"168h"`, `"1m30s"`, `"1.5h"`, `"500ms"`), or `"0"`.
//!   *Stevedore extension*: a bare non-negative integer (YAML `30` or `"30"`)
//!   means **seconds** (Go's YAML would read nanoseconds, which nobody means).
//!   Negative durations are rejected.
//! * **Sizes** — a non-negative number (fraction allowed) and an optional unit,
//!   case-insensitive, optional space between: `B` or none = bytes;
//!   `KB`/`MB`/`GB`/`TB`/`PB` = powers of **1000** (SI); `KiB`/`MiB`/`GiB`/
//!   `TiB`/`PiB`, `Ki`/`Mi`/…, and bare `K`/`M`/`G`/`T`/`P` = powers of
//!   **1024**. So `"200GiB"` = `"200G"` = 200·2³⁰ and `"500MB"` = 500·10⁶.
//!   A bare YAML integer is bytes.
//! * **Addresses** — `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (= 127.0.0.1),
//!   or distribution's `:PORT`, meaning all IPv4 interfaces (`0.0.0.0:PORT`).
//! * **URLs** — `http://` or `https://`, a host, optional port and path; no
//!   credentials, query or fragment. Trailing slashes are removed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Parses a Go-style duration, or a bare integer number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err("durations must not be negative".into());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| "duration is too large".to_string())?;
        return Ok(Duration::from_secs(secs));
    }
    // Order matters: "ms" must be tried before "m" and "s".
    // "d" is deliberately absent: Go does not accept it either.
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int, frac, after) = split_number(rest)
            .ok_or_else(|| format!("expected a number at {rest:?} (e.g. \"10s\", \"1h30m\")"))?;
        let (unit, nanos) = UNITS
            .iter()
            .find(|(u, _)| after.starts_with(u))
            .ok_or_else(|| {
                format!("missing or unknown unit at {after:?} (use ns, us, ms, s, m or h)")
            })?;
        total = total
            .checked_add(scaled(int, frac, *nanos).ok_or("duration is too large")?)
            .ok_or("duration is too large")?;
        rest = &after[unit.len()..];
    }
    let nanos = u64::try_from(total).map_err(|_| "duration is too large".to_string())?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a size in bytes (see the module documentation for the units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let (int, frac, unit) = split_number(s).ok_or_else(|| {
        "expected a number of bytes with an optional unit (e.g. \"200GiB\", \"500MB\")".to_string()
    })?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u128 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "p" | "pi" | "pib" => 1 << 50,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} (use B, KB, MB, GB, TB, PB for powers of 1000 or KiB, MiB, GiB, TiB, PiB, K, M, G, T, P for powers of 1024)"
            ));
        }
    };
    if mult == 1 && frac.bytes().any(|b| b != b'0') {
        return Err("a size in bytes must be a whole number".into());
    }
    let bytes = scaled(int, frac, mult).ok_or("size is too large")?;
    u64::try_from(bytes).map_err(|_| "size is too large".to_string())
}

/// Parses a listen address; `:PORT` means `0.0.0.0:PORT`.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let s = text.trim();
    const FORMS: &str = "expected IP:PORT, [IPv6]:PORT, localhost:PORT or :PORT";
    if let Some(port) = s.strip_prefix(':') {
        let port = parse_port(port).ok_or(FORMS)?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = parse_port(port).ok_or(FORMS)?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(format!(
        "{FORMS} (host names other than localhost are not resolved)"
    ))
}

/// Parses a `host:port` to dial (`redis.addr`): a host name or IPv4 address, or
/// `[IPv6]`, and a port. Names are resolved when connecting, not here.
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    const FORM: &str = "expected HOST:PORT or [IPv6]:PORT";
    let (host, port) = text.trim().rsplit_once(':').ok_or(FORM)?;
    let port = parse_port(port).filter(|p| *p != 0).ok_or(FORM)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
            v6
        }
        None if host.contains(':') => return Err(FORM.into()),
        None => host,
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
    {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok((host.to_string(), port))
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Checks an `http://` or `https://` URL and returns it without trailing
/// slashes.
pub fn parse_http_url(text: &str) -> Result<String, String> {
    let s = text.trim();
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL must not contain spaces or control characters".into());
    }
    let lower = s.to_ascii_lowercase();
    let scheme_len = if lower.starts_with("https://") {
        8
    } else if lower.starts_with("http://") {
        7
    } else {
        return Err("must be an http:// or https:// URL".into());
    };
    let rest = &s[scheme_len..];
    if rest.contains(['?', '#']) {
        return Err("a URL must not have a query or fragment".into());
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "credentials must not be part of the URL; use the username and password keys".into(),
        );
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed '[' in host")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("junk after ']'")?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if !authority.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!("{host:?} is not a valid host name"));
    }
    if let Some(p) = port {
        match parse_port(p) {
            Some(n) if n > 0 => {}
            _ => return Err(format!("{p:?} is not a valid port")),
        }
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Checks a repository-name prefix such as `"ghcr/"` or `"team/sub/"`:
/// slash-separated components of lowercase letters, digits and `.`, `_`, `-`,
/// each starting and ending with a letter or digit, ending with `/`.
pub fn check_repo_prefix(prefix: &str) -> Result<(), String> {
    let body = prefix
        .strip_suffix('/')
        .ok_or("a repository prefix must end with \"/\"")?;
    if body.is_empty() {
        return Err("a repository prefix must not be empty".into());
    }
    for part in body.split('/') {
        let ok = !part.is_empty()
            && part.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && part.as_bytes()[0].is_ascii_alphanumeric()
            && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Err(format!(
                "{part:?} is not a valid repository name component (lowercase letters, digits, '.', '_', '-')"
            ));
        }
    }
    Ok(())
}

/// Appends the `/` a repository prefix must end with, if missing.
pub fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim();
    if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

/// Checks an HTTP header name (an RFC 9110 token).
pub fn check_header_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid HTTP header name"))
    }
}

/// Splits `"12.5rest"` into `("12", "5", "rest")`; `None` without a digit.
fn split_number(s: &str) -> Option<(&str, &str, &str)> {
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int, after) = s.split_at(int_end);
    let (frac, after) = match after.strip_prefix('.') {
        Some(f) => {
            let end = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
            f.split_at(end)
        }
        None => ("", after),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    Some((int, frac, after))
}

/// `int.frac * mult`, rounded down; `None` on overflow.
fn scaled(int: &str, frac: &str, mult: u128) -> Option<u128> {
    let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = whole.checked_mul(mult)?;
    // Digits past the 18th cannot matter for any unit used here.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let num: u128 = frac.parse().ok()?;
        let den = 10u128.checked_pow(frac.len() as u32)?;
        total = total.checked_add(num.checked_mul(mult)? / den)?;
    }
    Some(total)
}
