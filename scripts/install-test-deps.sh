#!/usr/bin/env bash
# Installs what the test suite drives, on a fresh Debian machine (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  skopeo docker-registry docker.io umoci prometheus apache2-utils \
  ca-certificates curl iproute2 openssl >/dev/null
