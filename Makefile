# Tally: build, test and run a local cluster. `make help` lists the targets.
GO      ?= go
BIN     ?= ./tally
PKGS    := ./...

.PHONY: help build test test-unit test-e2e cluster cluster-stop node lint fmt fuzz bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build the tally binary
	$(GO) build -o $(BIN) ./cmd/tally

test: build ## what CI runs: vet, unit, in-process cluster and end-to-end tests
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 9m $(PKGS)

test-unit: ## fast tests only (no real processes)
	$(GO) test -count=1 -short $(PKGS)

test-e2e: build ## the end-to-end tests on the real binary
	$(GO) test -count=1 -v -timeout 5m ./test/...

cluster: build ## run 3 nodes and the proxy on localhost (data under ./data); Ctrl-C stops
	BIN=$(BIN) ./scripts/cluster.sh

cluster-stop: ## stop a cluster started in the background
	./scripts/cluster-stop.sh

node: build ## restart one node of the local cluster: make node N=2
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

bench: build ## go micro-benchmarks (tally bench runs against a cluster)
	$(GO) test -run '^$$' -bench . -benchtime 2s ./ledger/ ./fsm/

clean: ## remove the binary and local cluster data
	rm -rf $(BIN) data
