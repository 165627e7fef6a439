#!/usr/bin/env bash
# Installs the real servers and tools the test suite starts: Debian's docker-registry (OCI),
# rsync (daemon and client), OpenSSH (rsync over SSH), zstd and curl (benchmark baselines).
# The S3 (moto) and GCS (fake-gcs-server) servers come from pip with the `test` extra.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  docker-registry apache2-utils openssl rsync openssh-server openssh-client zstd curl >/dev/null
