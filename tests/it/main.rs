//! The one integration-test binary: every former `tests/*.rs` file is a module here, all on one
//! helper tree (`common`, with the API test helpers in `common::api`), so the suite links once.
//! Run one module with `cargo test --test it <module>::` (e.g. `cargo test --test it mirror::`).

mod common;

mod api_blobs;
mod api_errors;
mod api_listings;
mod api_manifests;
mod api_persistence;
mod api_uploads;
mod auth_builtin;
mod auth_htpasswd;
mod auth_policy;
mod auth_token;
mod bundle;
mod console;
mod crash;
mod deploy;
mod digest_sha512;
mod e2e_containerd;
mod e2e_docker;
mod e2e_skopeo;
mod fleet;
mod full_disk;
mod fuzz_smoke;
mod hostile;
mod keepalive;
mod lifecycle;
mod logging;
mod maintenance;
mod mirror;
mod mirror_policy;
mod mirror_resilience;
mod mirror_warm;
mod notifications_delivery;
mod notifications_events;
mod observability;
mod retention;
mod s3_replicas;
mod seed_configs;
mod smoke;
mod storage_s3;
mod storage_s3_gc;
mod storage_s3_uploads;
mod tls;
mod upstream_client;
