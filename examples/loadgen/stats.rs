//! Statistics over repetitions and the `key=value` result lines, shared by `loadgen` (which
//! writes the lines) and the bench runner (which reads them, takes medians and ratios).

/// The median as the bench has always reported it: the middle value, the lower of the two
/// middle ones for an even count. NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// `a / b`, the ratio every comparison line shows.
pub fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

/// `a` as a whole percentage of `b`.
pub fn percent(a: f64, b: f64) -> String {
    format!("{:.0}", 100.0 * a / b)
}

/// `v` with `places` decimals.
pub fn fixed(v: f64, places: usize) -> String {
    format!("{v:.places$}")
}

/// The value of `key` in a `key=value ...` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The numeric value of `key` in a `key=value ...` line.
pub fn number(line: &str, key: &str) -> Result<f64, String> {
    let v = field(line, key).ok_or_else(|| format!("no {key}= in {line:?}"))?;
    v.parse().map_err(|e| format!("{key}={v}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_lower_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn fields_by_key() {
        let l = "requests=4 errors=0 p99_us=120";
        assert_eq!(field(l, "errors"), Some("0"));
        assert_eq!(number(l, "p99_us"), Ok(120.0));
        assert!(number(l, "rps").is_err());
    }
}
