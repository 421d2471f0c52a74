//! Repository-name globs: `*` matches any run of characters but `/`, `**` any run. Used by
//! the mirror's allow/deny rules and pins, and by notification endpoints' `repositories`.

/// Whether `name` matches `glob` (`*`: any run of characters but `/`; `**`: any run).
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn go(g: &[u8], n: &[u8]) -> bool {
        match g.first() {
            None => n.is_empty(),
            Some(b'*') => {
                let across = g.get(1) == Some(&b'*');
                let rest = if across { &g[2..] } else { &g[1..] };
                for i in 0..=n.len() {
                    if go(rest, &n[i..]) {
                        return true;
                    }
                    if i < n.len() && !across && n[i] == b'/' {
                        return false;
                    }
                }
                false
            }
            Some(&c) => n.first() == Some(&c) && go(&g[1..], &n[1..]),
        }
    }
    go(glob.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (g, n, want) in [
            ("library/*", "library/alpine", true),
            ("library/*", "library/a/b", false),
            ("library/**", "library/a/b", true),
            ("library/*", "library", false),
            ("library/*", "bitnami/redis", false),
            ("*", "alpine", true),
            ("**", "a/b/c", true),
            ("a/*-dev", "a/web-dev", true),
            ("a/*-dev", "a/web-prod", false),
            ("exact/name", "exact/name", true),
            ("exact/name", "exact/names", false),
            ("*/*", "a/b", true),
        ] {
            assert_eq!(glob_match(g, n), want, "{g} vs {n}");
        }
    }
}
