//! How the console writes sizes, times and ratios (the same in both languages).

/// `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A time in milliseconds since the epoch as `2026-12-02 14:05 UTC`; `None` for 0.
pub fn time_ms(ms: u64) -> Option<String> {
    (ms > 0).then(|| time_secs(ms / 1000))
}

/// A time in seconds since the epoch as `2026-12-02 14:05 UTC`.
pub fn time_secs(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::clock::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// A ratio as a percentage, `—` when there is nothing to divide.
#[allow(dead_code)] // the dashboard
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".to_owned()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// A digest shortened for tables: `sha256:0123456789ab`.
#[allow(dead_code)] // the tags page
pub fn short_digest(d: &str) -> &str {
    let end = d.find(':').map(|i| i + 13).unwrap_or(12).min(d.len());
    &d[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(time_secs(0), "1970-01-01 00:00 UTC");
        assert_eq!(time_secs(1_798_207_200), "2026-12-25 14:00 UTC");
        assert_eq!(time_secs(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(time_ms(0), None);
        assert_eq!(percent(1, 4), "25.0%");
        assert_eq!(percent(1, 0), "—");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("sha256:01"), "sha256:01");
    }
}
