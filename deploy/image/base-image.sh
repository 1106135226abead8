#!/usr/bin/env bash
# Make sure the base image that the bento's Dockerfile starts FROM is available to ENGINE.
#
#   deploy/image/base-image.sh ENGINE IMAGE      e.g. podman python:3.11-slim-bookworm
#
# 1. Already in the engine's store: nothing to do.
# 2. Else pull it. On a machine that can reach the registry this is the real image and
#    nothing is faked.
# 3. Else (the development machines reach only the package registries) build a STAND-IN
#    under the same name, and say so loudly: a minimal Debian root filesystem of the same
#    release (debootstrap), Debian's python3.11 and pip, and the host's CA bundle, so that
#    package installs inside the build go through the same TLS proxy as the host. The
#    image is labelled org.tabserve.stand-in=true (`make image-size` shows it).
set -euo pipefail

engine="$1"
image="$2"
release="${DEBIAN_RELEASE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
host_ca="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

if "$engine" image inspect "$image" >/dev/null 2>&1; then
	exit 0
fi
echo ">> pulling the base image $image" >&2
if timeout 600 "$engine" pull "$image" >&2; then
	exit 0
fi

cat >&2 <<MSG

############################################################################################
#  $image cannot be pulled here. Building a STAND-IN base image under that name:
#  Debian $release (debootstrap --variant=minbase) + Debian's python3.11 + the host's CA
#  bundle. It is NOT the official image: sizes and packages differ. On a machine that can
#  pull, remove it ($engine rmi $image) and rebuild to use the real one.
############################################################################################

MSG
if ! command -v debootstrap >/dev/null; then
	echo ">> installing Debian packages: debootstrap" >&2
	$sudo apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap >&2
fi
root="$(mktemp -d "${TMPDIR:-/tmp}/tabserve-standin-XXXXXX")"
trap '$sudo rm -rf "$root"' EXIT
$sudo debootstrap --variant=minbase --include=python3.11,python3-pip,ca-certificates \
	"$release" "$root" "$mirror" >&2
# Like the official image: `python`/`python3` on PATH and pip allowed to install (PEP 668's
# marker would refuse it), no package caches.
$sudo ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
$sudo ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
$sudo rm -f "$root"/usr/lib/python3.11/EXTERNALLY-MANAGED
$sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# The host's bundle holds Debian's CAs and, here, the TLS proxy's.
$sudo cp "$host_ca" "$root/etc/ssl/certs/ca-certificates.crt"
$sudo tar -C "$root" -c . | "$engine" import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV LANG=C.UTF-8' \
	--change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
	--change 'LABEL org.tabserve.stand-in=true' \
	--change 'CMD ["python3"]' \
	- "$image" >&2
echo ">> stand-in base image $image built" >&2
