#!/usr/bin/env bash
# Print an image's size, what its own layers add to the base image, and its largest layers.
#
#   deploy/image/image-size.sh ENGINE IMAGE [BASE]
set -euo pipefail

engine="$1"
image="$2"
base="${3:-}"
mib() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1000000 }'; }

total=$("$engine" image inspect --format '{{.Size}}' "$image")
echo ">> image $image: $(mib "$total")"
if [ -n "$base" ] && "$engine" image inspect "$base" >/dev/null 2>&1; then
	base_size=$("$engine" image inspect --format '{{.Size}}' "$base")
	standin=$("$engine" image inspect --format '{{index .Config.Labels "org.tabserve.stand-in"}}' "$base" 2>/dev/null || true)
	note=""
	[ "$standin" = "true" ] && note=" (a locally built STAND-IN, see deploy/image/base-image.sh)"
	echo "   base $base: $(mib "$base_size")$note"
	echo "   layers above the base: $(mib $((total - base_size)))"
fi
echo "   largest layers:"
# "471 MB" → "471MB", so that sort -h reads the unit.
"$engine" history --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$image" |
	sed -E 's/^([0-9.]+) ([kKMGT]?B)/\1\2/' | sort -h -r | head -5 |
	while IFS=$'\t' read -r size created; do
		printf '   %10s  %s\n' "$size" "$(echo "$created" | tr -s ' ' | cut -c1-100)"
	done
