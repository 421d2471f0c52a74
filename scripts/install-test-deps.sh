#!/usr/bin/env bash
# Installs what the test suite drives, on a fresh Debian machine, as root: the real clients
# and peers of the end-to-end tests (skopeo, podman, the reference registry, Docker, Prometheus,
# htpasswd, openssl, mount/df for the full-disk test, redis-server for the shared layer-info
# cache). The Rust toolchain itself is expected
# to be there already (rustup's; Debian's rustc is older than the crate's rust-version).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    ca-certificates curl git build-essential pkg-config \
    tar gzip procps iproute2 util-linux mount openssl \
    skopeo podman \
    docker-registry \
    docker.io containerd runc tini \
    umoci \
    prometheus \
    redis-server redis-tools \
    apache2-utils \
    python3 >/dev/null
# Tests start their own redis-server on a loopback port; the package's system service is
# not wanted (and does not start where there is no init).
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
