#!/usr/bin/env bash
# Stops a local cluster started in the background with 'make cluster &'.
set -uo pipefail
cd "$(dirname "$0")/.."
found=0
for f in ${DATA:-./data ./data-tls}/*.pid; do
	[ -f "$f" ] || continue
	found=1
	p=$(cat "$f")
	kill -TERM "$p" 2>/dev/null && echo "stopped $(basename "$f" .pid) (pid $p)"
	rm -f "$f"
done
[ $found = 1 ] || echo "no cluster running (no pid files in ${DATA:-./data or ./data-tls})"
