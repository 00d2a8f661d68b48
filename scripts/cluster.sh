#!/usr/bin/env bash
# Runs a local cluster: three nodes (n1, n2, n3) and the proxy, data and
# logs under ./data. Ctrl-C stops everything. A node that dies or is killed
# leaves the others running; restart it with `make node N=<1|2|3>`.
# With TLS=1 (make cluster-tls) every port speaks TLS, nodes know each
# other by their certificates and clients need a token; data under
# ./data-tls.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./tally}
TLS=${TLS:-0}
if [ "$TLS" = 1 ]; then DATA=${DATA:-./data-tls}; else DATA=${DATA:-./data}; fi
SHARDS=${SHARDS:-4}
mkdir -p "$DATA"
. scripts/security.sh
[ "$TLS" = 1 ] && sec_init

pids=()
stop() {
	trap - INT TERM EXIT
	echo
	echo "stopping cluster..."
	# Nodes restarted with 'make node' are not our children: their pid
	# files name them.
	for f in "$DATA"/*.pid; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do
		for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	done
	rm -f "$DATA"/*.pid
	echo "stopped"
}
trap stop INT TERM EXIT

start_node() { # start_node N [extra flags...]
	local n=$1; shift
	# shellcheck disable=SC2046 # the flags are words
	"$BIN" server --id "n$n" --data "$DATA/n$n" --raft "127.0.0.1:700$n" --http "127.0.0.1:800$n" \
		--shards "$SHARDS" $(node_flags "$n") "$@" >>"$DATA/n$n.log" 2>&1 &
	pids+=($!)
	echo $! >"$DATA/n$n.pid"
}

wait_http() { # wait_http ADDR
	for _ in $(seq 1 100); do
		if curl_ok /healthz "$1"; then return 0; fi
		sleep 0.1
	done
	echo "node at $1 did not come up; see $DATA/*.log" >&2
	return 1
}

for port in 8001 8002 8003 8080 7001 7002 7003; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "127.0.0.1:$port is already in use: is a cluster running? ('make cluster-stop' stops one started here)" >&2
		trap - INT TERM EXIT
		exit 1
	fi
done

if [ -f "$DATA/n1/node.json" ]; then
	start_node 1
else
	start_node 1 --bootstrap
fi
wait_http 127.0.0.1:8001
for n in 2 3; do
	if [ -f "$DATA/n$n/node.json" ]; then start_node "$n"; else start_node "$n" --join 127.0.0.1:8001; fi
done
# shellcheck disable=SC2046
"$BIN" proxy --listen 127.0.0.1:8080 --nodes 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003 $(proxy_flags) >>"$DATA/proxy.log" 2>&1 &
pids+=($!)
echo $! >"$DATA/proxy.pid"

for _ in $(seq 1 150); do
	if curl_ok /readyz 127.0.0.1:8001 && curl_ok /v1/cluster 127.0.0.1:8080; then break; fi
	sleep 0.2
done
if secured; then
	cat <<MSG
Every port speaks TLS (CA $DATA/certs/ca.crt) and clients need a token.
Tokens (role): $DATA/tokens/admin (operator), app (write), reader (read); in
another terminal first:
  export TALLY_TLS_CA=$DATA/certs/ca.crt TALLY_TOKEN=\$(cat $DATA/tokens/admin)
MSG
fi
cat <<MSG
Tally is running: 3 nodes x $SHARDS shards, proxy on 127.0.0.1:8080.
  nodes  n1 127.0.0.1:8001  n2 127.0.0.1:8002  n3 127.0.0.1:8003  (Raft on 7001-7003)
  data   $DATA/n1 $DATA/n2 $DATA/n3     logs  $DATA/*.log
Try, in another terminal:
  ./tally cluster status
  ./tally account create alice --currency USD
Kill a node to watch failover (kill -9 \$(cat $DATA/n2.pid)); restart it with 'make node N=2$( [ "$TLS" = 1 ] && echo ' TLS=1')'.
Press Ctrl-C to stop.
MSG
wait
