#!/usr/bin/env bash
# Installs what the test suite drives, on a fresh Debian machine, as root: the real clients
# and peers of the end-to-end tests (skopeo, the reference registry, Docker, Prometheus,
# htpasswd, openssl, mount/df for the full-disk test). The Rust toolchain itself is expected
# to be there already (rustup's; Debian's rustc is older than the crate's rust-version).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    ca-certificates curl git build-essential pkg-config \
    tar gzip procps iproute2 util-linux mount openssl \
    skopeo \
    docker-registry \
    docker.io containerd runc tini \
    umoci \
    prometheus \
    apache2-utils \
    python3 >/dev/null
