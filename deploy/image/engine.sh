#!/usr/bin/env bash
# Print the container engine to use: `docker` when a Docker daemon answers, else `podman`.
#
# ENGINE=docker|podman forces one. Podman (with runc, see containers.conf here) is installed
# from Debian's packages when neither engine is usable. Messages go to stderr; stdout is
# only the engine's name, so callers can `engine=$(deploy/image/engine.sh)`.
set -euo pipefail

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

install_debian() {
	if ! command -v apt-get >/dev/null; then
		echo "engine.sh: $* missing and this is not a Debian-like system: install it" >&2
		exit 2
	fi
	echo ">> installing Debian packages: $*" >&2
	$sudo apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
	if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
		engine=docker
	else
		engine=podman
		echo ">> no Docker daemon answers here: building and running with podman" >&2
	fi
fi
case "$engine" in
docker)
	docker info >/dev/null 2>&1 || { echo "engine.sh: the Docker daemon does not answer" >&2; exit 2; }
	;;
podman)
	missing=()
	command -v podman >/dev/null || missing+=(podman)
	command -v runc >/dev/null || missing+=(runc)
	[ ${#missing[@]} -eq 0 ] || install_debian "${missing[@]}"
	;;
*)
	echo "engine.sh: ENGINE must be docker or podman, not '$engine'" >&2
	exit 2
	;;
esac
echo "$engine"
