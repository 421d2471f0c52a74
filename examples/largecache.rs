//! The "large cache" scenario of the bench (`examples/bench`) (issue 11): an index of N blob
//! records (90% cached from an upstream, 10% pushed), written directly through the index API, then:
//!
//! - start-up: reopening the index (one pass to count the running totals);
//! - scrape: the storage gauges refreshed from the running totals and `/metrics` encoded;
//! - eviction: a pass with nothing to evict, and a pass that evicts 1000 blobs;
//! - for comparison, one full scan of the blob records (what every scrape and every eviction
//!   pass cost before the running totals and the access-ordered tree).
//!
//! Prints one line of `key=value` pairs per N (times in milliseconds):
//!
//! ```text
//! entries=.. write_s=.. startup_ms=.. scrape_ms=.. evict_idle_ms=.. evict_1000_ms=.. full_scan_ms=..
//! ```
//!
//! Usage: `largecache [N]...` (default `100000 1000000`). Works in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};
use stevedore::config::Config;
use stevedore::index::{BlobRecord, Index, Origin};
use stevedore::lifecycle::EvictOptions;
use stevedore::metrics::Metrics;
use stevedore::oci::{Digest, RepoName};

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Median time of `reps` runs of `f`.
fn median(reps: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[reps / 2]
}

async fn scenario(n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).expect("data dir");
    let repo = RepoName::parse("library/large").expect("repo name");
    let started = Instant::now();
    {
        let index = Index::open(&root.join("index")).expect("index opens");
        for i in 0..n {
            let d = Digest::of(&i.to_le_bytes());
            let origin = if i % 10 == 0 {
                Origin::Local
            } else {
                Origin::Proxy
            };
            let rec = BlobRecord {
                size: 1000 + i % 4096,
                origin,
                created: 1_000 + i,
                last_access: 1_000 + i,
            };
            index.record_blob(&repo, &d, &rec).expect("record");
        }
        futures::executor::block_on(index.flush()).expect("flush");
    }
    let write = started.elapsed();

    let startup = {
        let s = Instant::now();
        let index = Index::open(&root.join("index")).expect("index reopens");
        let e = s.elapsed();
        drop(index);
        e
    };

    let config = Config::from_yaml_str(&format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
        root.display()
    ))
    .expect("config");
    let metrics = Arc::new(Metrics::new());
    // Offline: no start-up recovery (the records have no files, recovery would drop them).
    let app = stevedore::App::open_offline(config, metrics)
        .await
        .expect("app opens");
    let scrape = median(21, || {
        app.refresh_gauges();
        std::hint::black_box(app.metrics.encode());
    });
    let full_scan = median(3, || {
        std::hint::black_box(app.depot.index.blobs().expect("scan"));
    });
    let (_, proxied) = app.depot.index.totals(Origin::Proxy);
    let idle = EvictOptions {
        max_size: Some(proxied),
        max_age: Duration::ZERO,
        pinned: None,
        notifier: app.notifier.clone(),
    };
    let s = Instant::now();
    let none = stevedore::lifecycle::evict::pass(&app.depot, &idle, &|_: &Digest| false)
        .await
        .expect("idle pass");
    let evict_idle = s.elapsed();
    assert_eq!(none, 0);
    // The 1000 least recently used blobs are at most 1000 × 5095 bytes.
    let options = EvictOptions {
        max_size: Some(proxied - 1000 * 1000),
        max_age: Duration::ZERO,
        pinned: None,
        notifier: app.notifier.clone(),
    };
    let s = Instant::now();
    let evicted = stevedore::lifecycle::evict::pass(&app.depot, &options, &|_: &Digest| false)
        .await
        .expect("pass");
    let evict = s.elapsed();
    println!(
        "entries={n} write_s={:.1} startup_ms={} scrape_ms={} evict_idle_ms={} evicted={evicted} evict_ms={} full_scan_ms={}",
        write.as_secs_f64(),
        ms(startup),
        ms(scrape),
        ms(evict_idle),
        ms(evict),
        ms(full_scan),
    );
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N is a number of index entries"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    for n in sizes {
        scenario(n).await;
    }
}
