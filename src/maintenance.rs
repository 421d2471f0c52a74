//! The shared bucket's maintenance job wired from the configuration: its options
//! (`storage.maintenance.gc`, `proxy.maxsize`, `proxy.ttl`, `proxy.pin`), the store it runs
//! on when started by `stevedore gc`/`evict` (no local index: the job works on the bucket
//! alone), a replica's periodic run, and the access records each replica writes. The job
//! itself is `lifecycle::bucket`; this module decides nothing about what goes.

use crate::config::Config;
use crate::depot::Depot;
use crate::lifecycle::bucket::{self, BucketGcError, BucketGcOptions, BucketGcReport};
use crate::storage::{BlobStore, LeaseError};
use std::sync::Arc;
use std::time::Duration;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Unreferenced pushed blobs (two-phase) and cached content over its limits.
    Gc,
    /// Cached content over its limits only.
    Evict,
}

/// Why a run did not happen or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("{0}")]
    Job(#[from] BucketGcError),
    #[error("storage at {path}: {source}")]
    Open {
        path: String,
        source: crate::storage::StoreError,
    },
}

impl MaintenanceError {
    /// The lease is held by another run: nothing was done, try later (exit status 75,
    /// EX_TEMPFAIL, for the command).
    pub fn lease_held(&self) -> bool {
        matches!(
            self,
            MaintenanceError::Job(BucketGcError::Lease(LeaseError::Held { .. }))
        )
    }
}

/// The job's options from `config`; `grace` overrides `storage.maintenance.gc.grace`.
pub fn options(
    config: &Config,
    job: Job,
    dry_run: bool,
    grace: Option<Duration>,
    holder: String,
) -> BucketGcOptions {
    let gc = &config.storage.maintenance.gc;
    let rules = crate::mirror::pins::PinRules::new(&config.proxy.pin);
    let pinned = (!rules.is_empty()).then(|| {
        Arc::new(move |r: &crate::oci::RepoName, t: &crate::oci::Tag| {
            rules.pins(r.as_str(), t.as_str())
        }) as crate::lifecycle::evict::Pinned
    });
    BucketGcOptions {
        dry_run,
        collect: job == Job::Gc,
        evict: config.proxy_enabled(),
        grace: grace.unwrap_or(gc.grace),
        lease_ttl: gc.leasettl.max(Duration::from_secs(1)),
        max_size: config.proxy.maxsize,
        max_age: config.proxy.ttl,
        recent: gc.accessinterval * 2,
        pinned,
        holder,
    }
}

/// Who holds the lease: the pod (`HOSTNAME`) or node, and the process.
pub fn holder(store: &BlobStore) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| store.bucket().map(|b| b.node().to_owned()))
        .unwrap_or_else(|| "stevedore".into());
    format!("{host}/{}", std::process::id())
}

/// One run from a command (`stevedore gc`/`evict`): opens the bucket of `config` (its local
/// directory only for staging and the node name; no index is opened, so it runs beside a
/// replica on the same disk too).
pub async fn run_command(
    config: &Config,
    job: Job,
    dry_run: bool,
    grace: Option<Duration>,
) -> Result<BucketGcReport, MaintenanceError> {
    let Some(s3) = &config.storage.s3 else {
        return Err(BucketGcError::NoBucket.into());
    };
    let root = config.storage.local_root();
    let store = BlobStore::open_s3(s3, root)
        .await
        .map_err(|source| MaintenanceError::Open {
            path: format!("s3://{}", s3.bucket),
            source,
        })?;
    let opts = options(config, job, dry_run, grace, holder(&store));
    Ok(bucket::run(&store, &opts).await?)
}

/// A replica's periodic run (`storage.maintenance.gc.interval`): every interval, the whole
/// job when the lease is free; a held lease is the normal case (another replica or the
/// CronJob runs) and only logged at debug.
pub async fn periodic(
    depot: Arc<Depot>,
    options: BucketGcOptions,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let work = async {
        loop {
            tokio::time::sleep(interval).await;
            match bucket::run(&depot.store, &options).await {
                Ok(_) => {}
                Err(BucketGcError::Lease(e @ LeaseError::Held { .. })) => {
                    tracing::debug!(reason = %e, "bucket maintenance skipped");
                }
                Err(e) => tracing::warn!(error = %e, "bucket maintenance failed"),
            }
        }
    };
    tokio::select! {
        () = work => {},
        () = stop => {},
    }
}

/// Writes this replica's access record every `interval` (and once more at `stop`): the
/// blobs it served since the last one, each with its last access, in one object.
pub async fn record_access(
    depot: Arc<Depot>,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let Some(bucket) = depot.store.bucket().cloned() else {
        return;
    };
    let write = || async {
        let accesses = depot.take_shared_access();
        if accesses.is_empty() {
            return;
        }
        if let Err(e) = bucket.put_access_record(&accesses).await {
            tracing::warn!(error = %e, blobs = accesses.len(), "writing the access record failed; kept for the next");
            depot.restore_shared_access(accesses);
        }
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => write().await,
            () = &mut stop => {
                write().await;
                return;
            }
        }
    }
}
