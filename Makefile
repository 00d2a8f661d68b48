# Tally: build, test and run a local cluster. `make help` lists the targets.
# Go as installed on the machine: on PATH, or where its tarball puts it.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# The tests run go themselves, and servers that Debian installs in sbin
# (nats-server), which a non-login shell may not have on PATH.
export PATH := $(dir $(GO)):$(PATH):/usr/sbin:/sbin
GOFMT   := $(shell $(GO) env GOROOT)/bin/gofmt
BIN     ?= ./tally
PKGS    := ./...

.PHONY: help prereqs build test test-unit test-e2e cluster cluster-tls cluster-stop node lint fmt fuzz bench bench-micro clean \
	jepsen jepsen-ci jepsen-members jepsen-soak jepsen-selftest jepsen-regress bench-sink

# The fault suite (test/README.md). SEED 0 picks a seed from the clock;
# FAULTS is a comma-separated list of fault classes (empty: all).
JEPSEN   := $(GO) run ./test/jepsen/cmd/jepsen
# The opt-in operations faults of make jepsen-members (test/README.md).
MEMBERS  := membership,rolling-restart,kill-leader,backup
SEED     ?= 0
FAULTS   ?=
DURATION ?=

prereqs: ## install what make test needs (root, apt) or name what is missing
	@./scripts/prereqs.sh

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build the tally binary
	$(GO) build -o $(BIN) ./cmd/tally

test: prereqs build ## what CI runs: gofmt, vet, unit, in-process cluster, end-to-end tests and the fault suite's CI profile
	@unformatted=$$($(GOFMT) -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt -w needed: $$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 9m $(PKGS)
	$(JEPSEN) -profile ci -seed $(SEED)

test-unit: ## fast tests only (no real processes)
	$(GO) test -count=1 -short $(PKGS)

test-e2e: build ## the end-to-end tests on the real binary
	$(GO) test -count=1 -v -timeout 5m ./test/...

cluster: build ## run 3 nodes and the proxy on localhost (data under ./data); Ctrl-C stops
	BIN=$(BIN) ./scripts/cluster.sh

cluster-tls: build ## the same cluster with TLS everywhere, node certificates and tokens (data under ./data-tls)
	BIN=$(BIN) TLS=1 ./scripts/cluster.sh

cluster-stop: ## stop a cluster started in the background
	./scripts/cluster-stop.sh

node: build ## restart one node of the local cluster: make node N=2 (TLS=1 for cluster-tls)
	BIN=$(BIN) ./scripts/node.sh $(N)

lint: ## go vet and staticcheck
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

fmt: ## gofmt every file
	gofmt -w $$(git ls-files '*.go')

fuzz: ## run every fuzz target for FUZZTIME (default 30s)
	@for t in $$(grep -rl '^func Fuzz' --include='*_test.go' . | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9]*\).*/\1/'); do \
			echo "== $$t $$f"; $(GO) test $$t -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} || exit 1; \
		done; done

jepsen-ci: ## the fault suite's CI profile: every fault class once (2-3 min, needs root)
	$(JEPSEN) -profile ci -seed $(SEED) $(if $(FAULTS),-faults $(FAULTS))

jepsen: ## a longer fault run: make jepsen SEED=42 FAULTS=kill-leader,halves DURATION=10m
	$(JEPSEN) -profile random -seed $(SEED) -duration $(or $(DURATION),10m) $(if $(FAULTS),-faults $(FAULTS))

jepsen-members: ## the opt-in operations faults (join, leave, rolling restart, backup and restore) under load
	$(JEPSEN) -profile random -seed $(SEED) -duration $(or $(DURATION),3m) -faults $(or $(FAULTS),$(MEMBERS))

jepsen-soak: ## random fault runs with fresh seeds for DURATION (default 30m); keeps failures only
	$(JEPSEN) -profile soak -duration $(or $(DURATION),30m) $(if $(FAULTS),-faults $(FAULTS))

jepsen-regress: ## the fault runs that found product bugs (test/README.md), again
	$(JEPSEN) -profile random -seed 242473758 -duration 4m
	$(JEPSEN) -profile random -seed 5004 -duration 4m -faults pause-leader,pause-follower,crash-point,kill-follower
	$(JEPSEN) -profile random -seed 119998575 -duration 4m

jepsen-selftest: ## build the product with each planted bug; the fault suite must catch every one
	$(JEPSEN) -profile selftest -seed $(SEED)

bench: build ## the standard profile on a fresh cluster vs etcd and PostgreSQL: make bench BENCHFLAGS='-duration 5s -no-peers'
	$(GO) run ./test/benchrun -bin $(BIN) $(BENCHFLAGS)

bench-sink: ## the sinks' figures (PostgreSQL, JetStream): lag at half of peak, catch-up of a backlog, rebuild (minutes)
	TALLY_SINK_FIGURES=1 $(GO) test -count=1 -v -timeout 40m -run '^TestSink(Postgres|NATS)Figures$$' ./test/e2e/

bench-micro: build ## go micro-benchmarks (tally bench runs against a cluster)
	$(GO) test -run '^$$' -bench . -benchtime 2s ./ledger/ ./fsm/

clean: ## remove the binary and local cluster data
	rm -rf $(BIN) data
