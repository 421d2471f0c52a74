//! The `Range` header of blob GETs (one `bytes=` range, in any of its three forms), and the
//! `Content-Range` of chunked upload PATCHes: pure parsing, fuzzed (`fuzz/`). Also the `Range`
//! an upload's answers carry (`upload_range`).

/// The `Range` value saying an upload holds `offset` bytes: `0-<last byte>`, and `0-0` when
/// empty, as distribution answers.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No range (or one we ignore: several ranges, or a unit other than `bytes`, as RFC 9110
    /// says): the whole blob, 200.
    Whole,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// Cannot be satisfied or cannot be parsed, 416.
    Invalid,
}

impl ByteRange {
    pub fn parse(header: Option<&str>, size: u64) -> ByteRange {
        let Some(h) = header else {
            return ByteRange::Whole;
        };
        // RFC 9110 §14.2: a range unit the server does not know is ignored; units are
        // case-insensitive.
        let Some(spec) = h
            .trim()
            .split_once('=')
            .and_then(|(unit, spec)| unit.trim().eq_ignore_ascii_case("bytes").then_some(spec))
        else {
            return ByteRange::Whole;
        };
        if spec.contains(',') {
            return ByteRange::Whole;
        }
        let Some((a, b)) = spec.trim().split_once('-') else {
            return ByteRange::Invalid;
        };
        let num = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let (start, end) = match (a.trim(), b.trim()) {
            ("", suffix) => match num(suffix) {
                Some(0) | None => return ByteRange::Invalid,
                Some(n) => (size.saturating_sub(n), size.saturating_sub(1)),
            },
            (start, "") => match num(start) {
                Some(s) => (s, size.saturating_sub(1)),
                None => return ByteRange::Invalid,
            },
            (start, end) => match (num(start), num(end)) {
                (Some(s), Some(e)) if s <= e => (s, e.min(size.saturating_sub(1))),
                _ => return ByteRange::Invalid,
            },
        };
        if size == 0 || start >= size {
            return ByteRange::Invalid;
        }
        ByteRange::Part { start, end }
    }
}

/// The `Content-Range` of an upload chunk: `<start>-<end>`, inclusive (also with a `bytes `
/// prefix, and a `/<total>` suffix, which is ignored). `None` when it does not parse or
/// `end < start`.
pub fn chunk_range(value: &str) -> Option<(u64, u64)> {
    let spec = value
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    let spec = spec.split('/').next().unwrap_or(spec);
    spec.split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .filter(|(a, b)| a <= b)
}

#[cfg(test)]
mod tests {
    use super::ByteRange::*;
    use super::*;

    #[test]
    fn forms() {
        let p = |h: &str| ByteRange::parse(Some(h), 100);
        assert_eq!(ByteRange::parse(None, 100), Whole);
        assert_eq!(p("bytes=0-9"), Part { start: 0, end: 9 });
        assert_eq!(p("bytes=90-"), Part { start: 90, end: 99 });
        assert_eq!(p("bytes=-10"), Part { start: 90, end: 99 });
        assert_eq!(p("bytes=-1000"), Part { start: 0, end: 99 });
        assert_eq!(p("bytes=50-1000"), Part { start: 50, end: 99 });
        assert_eq!(p("bytes=100-"), Invalid);
        assert_eq!(p("bytes=9-0"), Invalid);
        assert_eq!(p("bytes=a-b"), Invalid);
        assert_eq!(p("bytes=-0"), Invalid);
        // Unknown units are ignored (RFC 9110), the unit is case-insensitive.
        assert_eq!(p("items=0-1"), Whole);
        assert_eq!(p("lines=0-"), Whole);
        assert_eq!(p("0-1"), Whole);
        assert_eq!(p("Bytes=0-9"), Part { start: 0, end: 9 });
        assert_eq!(p("bytes=x"), Invalid);
        assert_eq!(p("bytes=0-1,5-6"), Whole);
        assert_eq!(ByteRange::parse(Some("bytes=0-"), 0), Invalid);
    }

    #[test]
    fn chunk_ranges() {
        assert_eq!(chunk_range("0-9"), Some((0, 9)));
        assert_eq!(chunk_range("bytes 10-19/100"), Some((10, 19)));
        assert_eq!(chunk_range("bytes=10-19"), Some((10, 19)));
        assert_eq!(chunk_range("9-0"), None);
        assert_eq!(chunk_range("a-b"), None);
        assert_eq!(chunk_range("0-18446744073709551616"), None);
        // The largest range parses; its length does not fit a u64 (callers use checked_add).
        let (start, end) = chunk_range("0-18446744073709551615").unwrap();
        assert_eq!((end - start).checked_add(1), None);
        assert_eq!(end.checked_add(1), None);
    }
}
