//! Log set-up from `log.level`, `log.formatter` and `log.fields`: tracing's text or JSON
//! formatter, with the configured static fields added to every line. `STEVEDORE_LOG` (an
//! `EnvFilter` directive) overrides the level.

use crate::config::{Config, LogFormat};
use std::fmt::Write as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_env("STEVEDORE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sled=warn", config.log.level.as_str())));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = config.log.formatter == LogFormat::Json;
    let extra = extra_fields(&config.log.fields, json);
    match (json, extra.is_empty()) {
        (true, true) => builder.json().flatten_event(true).init(),
        (false, true) => builder.init(),
        (true, false) => {
            let inner = tracing_subscriber::fmt::format().json().flatten_event(true);
            builder
                .event_format(WithFields { inner, json, extra })
                .init()
        }
        (false, false) => {
            let inner = tracing_subscriber::fmt::format().with_ansi(false);
            builder
                .with_ansi(false)
                .event_format(WithFields { inner, json, extra })
                .init()
        }
    }
}

/// `,"k":"v"` pairs for JSON lines, ` k=v` pairs for text lines.
fn extra_fields(fields: &std::collections::BTreeMap<String, String>, json: bool) -> String {
    let mut out = String::new();
    for (k, v) in fields {
        if json {
            let k = serde_json::to_string(k).expect("strings serialize");
            let v = serde_json::to_string(v).expect("strings serialize");
            let _ = write!(out, ",{k}:{v}");
        } else {
            let _ = write!(out, " {k}={v:?}");
        }
    }
    out
}

/// Wraps a formatter and appends the static fields to each line it writes.
struct WithFields<F> {
    inner: F,
    json: bool,
    extra: String,
}

impl<S, N, F> FormatEvent<S, N> for WithFields<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        match line.strip_suffix('}').filter(|_| self.json) {
            Some(body) => writeln!(writer, "{body}{}}}", self.extra),
            None => writeln!(writer, "{line}{}", self.extra),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_render_for_both_formats() {
        let mut f = std::collections::BTreeMap::new();
        f.insert("service".to_owned(), "mirror \"a\"".to_owned());
        f.insert("env".to_owned(), "prod".to_owned());
        assert_eq!(
            extra_fields(&f, true),
            r#","env":"prod","service":"mirror \"a\"""#
        );
        assert_eq!(
            extra_fields(&f, false),
            r#" env="prod" service="mirror \"a\"""#
        );
    }
}
