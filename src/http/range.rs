//! The `Range` header of blob GETs: one `bytes=` range, in any of its three forms.

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No range (or one we ignore, such as several ranges): the whole blob, 200.
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
        let Some(spec) = h.trim().strip_prefix("bytes=") else {
            return ByteRange::Invalid;
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
        assert_eq!(p("items=0-1"), Invalid);
        assert_eq!(p("bytes=0-1,5-6"), Whole);
        assert_eq!(ByteRange::parse(Some("bytes=0-"), 0), Invalid);
    }
}
