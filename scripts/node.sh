#!/usr/bin/env bash
# Restarts one node of the local cluster (after it died or was killed),
# in the background, with its existing data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./tally}
if [ "${TLS:-0}" = 1 ]; then DATA=${DATA:-./data-tls}; else DATA=${DATA:-./data}; fi
. scripts/security.sh
n=${1:?usage: node.sh N}
if [ -f "$DATA/n$n.pid" ] && kill -0 "$(cat "$DATA/n$n.pid")" 2>/dev/null; then
	echo "n$n is already running (pid $(cat "$DATA/n$n.pid"))" >&2
	exit 1
fi
[ -f "$DATA/n$n/node.json" ] || { echo "n$n has no data in $DATA/n$n: start the cluster with 'make cluster'" >&2; exit 1; }
# shellcheck disable=SC2046 # the flags are words
nohup "$BIN" server --id "n$n" --data "$DATA/n$n" --raft "127.0.0.1:700$n" --http "127.0.0.1:800$n" $(node_flags "$n") \
	>>"$DATA/n$n.log" 2>&1 &
echo $! >"$DATA/n$n.pid"
echo "n$n restarted (pid $!); log: $DATA/n$n.log"
