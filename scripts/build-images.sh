#!/usr/bin/env bash
# Builds the two images from their Dockerfiles, unchanged, with buildah:
#   images/wrapresolver/Dockerfile -> ghcr.io/wrapresolver/wrapresolver:<version>
#   images/base/Dockerfile         -> ghcr.io/wrapresolver/base:<version>
# <version> is the project's version in pyproject.toml, the tag a release publishes and the
# step image the resolver injects by default.
#
# The Debian base (ARG DEBIAN_BASE in images/wrapresolver/Dockerfile) is pulled as usual when
# its registry answers. When none does (an offline or package-mirror-only machine), the same
# Debian release is created locally from the Debian archive with mmdebstrap and tagged under
# the name the Dockerfile uses, so the Dockerfile itself is still what gets built.
#
# Usage: scripts/build-images.sh [--tag TAG] [--image NAME] [--base-image NAME]
#                                [--debian-base auto|pull|mmdebstrap] [--ca-file FILE] [--push]
#   --ca-file  CA bundle pip must trust inside the build (a TLS-inspecting proxy); default
#              $PIP_CERT when set. Mounted for the build only, never copied into an image.
#   --push     push both images after building (log in first: buildah login ghcr.io)
# Needs: buildah, and mmdebstrap for the offline base (Debian: apt-get install buildah mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

image=ghcr.io/wrapresolver/wrapresolver
base_image=ghcr.io/wrapresolver/base
tag=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
debian_base_mode=auto
push=false
ca_file=${PIP_CERT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --base-image) base_image=$2; shift 2 ;;
    --debian-base) debian_base_mode=$2; shift 2 ;;
    --ca-file) ca_file=$2; shift 2 ;;
    --push) push=true; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in buildah python3; do
  command -v "$tool" >/dev/null || { echo "build-images.sh: $tool is not installed (apt-get install buildah)" >&2; exit 1; }
done
case "$debian_base_mode" in auto|pull|mmdebstrap) ;; *)
  echo "build-images.sh: --debian-base must be auto, pull or mmdebstrap" >&2; exit 2 ;;
esac

# The base's name, as the Dockerfile spells it: docker.io/library/debian:<suite>[-<date>]-slim.
debian_base=$(sed -n 's/^ARG DEBIAN_BASE=//p' images/wrapresolver/Dockerfile)
suite=${debian_base##*:}
suite=${suite%%-*}
if [ -z "$debian_base" ] || [ -z "$suite" ]; then
  echo "build-images.sh: images/wrapresolver/Dockerfile has no 'ARG DEBIAN_BASE=<image>'" >&2
  exit 1
fi

# RUN steps under chroot isolation: no OCI runtime, no user namespaces, works in CI containers.
export BUILDAH_ISOLATION=chroot

debian_base_from_archive() {
  # A root filesystem from Debian's own packages, like the official slim image: the
  # Essential and required packages plus apt (minbase), without documentation, manuals or
  # translations, and the release, updates and security suites in its apt sources.
  command -v mmdebstrap >/dev/null || {
    echo "build-images.sh: no registry serves $debian_base and mmdebstrap is not installed (apt-get install mmdebstrap)" >&2
    exit 1
  }
  local work rootfs ctr
  work=$(mktemp -d)
  rootfs=$work/rootfs.tar
  echo "== creating $debian_base from the Debian archive ($suite, mmdebstrap)"
  # apt settings of the official image: no binary caches, compressed indexes, no translations.
  cat >"$work/docker-clean" <<'APT'
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::GzipIndexes "true";
Acquire::Languages "none";
Apt::AutoRemove::SuggestsImportant "false";
APT
  mmdebstrap --quiet --variant=minbase --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook="upload $work/docker-clean /etc/apt/apt.conf.d/docker-clean" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
    "$suite" "$rootfs" \
    "deb http://deb.debian.org/debian $suite main" \
    "deb http://deb.debian.org/debian $suite-updates main" \
    "deb http://deb.debian.org/debian-security $suite-security main"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$rootfs" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash \
    --label org.opencontainers.image.description="Debian $suite minbase from the Debian archive (mmdebstrap)" "$ctr"
  buildah commit --quiet --rm "$ctr" "$debian_base" >/dev/null
  rm -rf "$work"
}

have_local() { buildah inspect --type image "$1" >/dev/null 2>&1; }

start=$(date +%s)
case "$debian_base_mode" in
  pull) buildah pull --quiet --policy always "$debian_base" >/dev/null ;;
  mmdebstrap) debian_base_from_archive ;;
  auto)
    if timeout 120 buildah pull --quiet --policy always "$debian_base" >/dev/null 2>&1; then
      echo "== pulled $debian_base"
    elif have_local "$debian_base"; then
      echo "== no registry serves $debian_base: using the local one"
    else
      debian_base_from_archive
    fi ;;
esac

build_ca=()
if [ -n "$ca_file" ]; then
  [ -f "$ca_file" ] || { echo "build-images.sh: the CA bundle $ca_file does not exist" >&2; exit 1; }
  build_ca=(--volume "$(realpath "$ca_file"):/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
fi

echo "== building $image:$tag"
# --pull=false: the base is in local storage now (pulled or created); use it as it is.
# --layers: the dependency layers are reused while requirements.lock is unchanged.
buildah bud --quiet --layers --pull=false --format oci "${build_ca[@]}" \
  -f images/wrapresolver/Dockerfile -t "$image:$tag" . >/dev/null
echo "== building $base_image:$tag"
# A fixed creation time (the last commit of images/base): the same empty image, the same digest.
base_time=$(git -c safe.directory="$PWD" log -1 --format=%ct -- images/base 2>/dev/null || true)
buildah bud --quiet --pull=false --format oci --timestamp "${base_time:-0}" \
  -f images/base/Dockerfile -t "$base_image:$tag" images/base >/dev/null

report() {
  local ref=$1 size digest
  # sed reads to the end: head would leave buildah to die of SIGPIPE under pipefail
  # when one image carries many tags (a machine that built many versions).
  size=$(buildah images --format '{{.Size}}' "$ref" | sed -n 1p)
  digest=$(buildah inspect --type image --format '{{.FromImageDigest}}' "$ref")
  echo "$ref  size $size  digest $digest"
}
echo "== built in $(( $(date +%s) - start )) s"
report "$image:$tag"
report "$base_image:$tag"

if [ "$push" = true ]; then
  for ref in "$image:$tag" "$base_image:$tag"; do
    digestfile=$(mktemp)
    buildah push --quiet --digestfile "$digestfile" "$ref" "docker://$ref"
    echo "pushed $ref  digest $(cat "$digestfile")"
    rm -f "$digestfile"
  done
fi
