#!/usr/bin/env bash
# Installs the real servers and tools the test suite starts: Debian's docker-registry (OCI),
# rsync (daemon and client), zstd and curl (benchmark baselines); buildah and mmdebstrap
# build the images for tests/images (scripts/build-images.sh).
# The S3 (moto, SeaweedFS), GCS (fake-gcs-server) and WebDAV (WsgiDAV) servers come from pip.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  docker-registry apache2-utils openssl rsync zstd curl openssh-server openssh-client \
  buildah mmdebstrap >/dev/null
# sshd's privilege-separation directory (the tests start sshd on a loopback port).
$SUDO mkdir -p /run/sshd
# kustomize builds the install manifests in tests/test_install.py (kubectl's built-in one will do).
if ! command -v kustomize >/dev/null && ! command -v kubectl >/dev/null; then
  KUSTOMIZE_VERSION=v5.5.0
  ARCH="$(dpkg --print-architecture)"
  curl -fsSL "https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2F${KUSTOMIZE_VERSION}/kustomize_${KUSTOMIZE_VERSION}_linux_${ARCH}.tar.gz" \
    | $SUDO tar -xz -C /usr/local/bin kustomize
fi
