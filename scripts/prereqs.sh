#!/usr/bin/env bash
# Installs what `make test` needs and a fresh Debian machine lacks, or stops
# with one line naming what is missing. The fault suite runs each process
# in a network namespace (ip), cuts links with nftables (nft) and fills a
# loop-mounted disk (mkfs.ext4); it needs root for all three.
# The JetStream sink's tests start a real nats-server, the PostgreSQL
# sink's a real postgres (Debian's postgresql: 15 on bookworm, its
# binaries in /usr/lib/postgresql/15/bin).
set -euo pipefail
# git lists the sources for the gofmt check.
declare -A pkg=([ip]=iproute2 [nft]=nftables [mkfs.ext4]=e2fsprogs [curl]=curl [nats-server]=nats-server
	[postgres]=postgresql [git]=git)
PATH=$PATH:/usr/sbin:/sbin:/usr/lib/postgresql/15/bin:/usr/local/go/bin
if ! command -v go >/dev/null 2>&1; then
	echo "make test needs Go (the go command, on PATH or in /usr/local/go/bin)" >&2
	exit 1
fi
missing=()
for cmd in "${!pkg[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg[$cmd]}")
done
if [ "$(id -u)" -ne 0 ]; then
	echo "make test needs root (network namespaces, nftables, a loop mount); run it as root" >&2
	exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
	echo "make test needs ${missing[*]} and this machine has no apt-get to install them" >&2
	exit 1
fi
echo "installing ${missing[*]}"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/tmp/tally-prereqs.log 2>&1; then
	echo "make test could not install ${missing[*]} (apt-get failed; see /tmp/tally-prereqs.log)" >&2
	exit 1
fi
