# Ballast's developer entry points. `make verify` is what CI runs.
GO      ?= go
PKGS    := ./...
FUZZTIME ?= 20s

.PHONY: kine-ref bench-sqlbridge build test test-kubernetes test-robustness test-robustness-ci test-unit test-e2e fuzz bench bench-compare bench-cluster bench-defrag bench-regions lint verify etcd-ref clean

build:
	$(GO) build -o bin/ballast ./cmd/ballast

# The reference etcd v3.7 and etcdctl, built from the Go module proxy in a
# module of their own (test/etcdref) so etcd's server never enters go.mod.
etcd-ref:
	test/etcdref/build.sh

# The reference kine (test/kineref), for the SQL bridge's tests.
kine-ref:
	test/kineref/build.sh

# Every test, race detector on: unit, end-to-end and the etcd compatibility suite;
# then Kubernetes' own storage tests (a module of their own, test/kubernetes)
# against a three-member Ballast cluster and a three-member etcd. Run in the
# module's directory, go test prints the suite's pass/fail summary lines.
# Last, the fixed-seed fault scenarios, alone: they inject timed faults, and
# other packages' tests running beside them would only blur the timings.
test: etcd-ref kine-ref
	$(GO) test -race -timeout 20m -skip '^TestRobustness$$' $(PKGS)
	$(MAKE) test-kubernetes
	$(MAKE) test-robustness-ci

test-kubernetes: etcd-ref
	cd test/kubernetes && $(GO) test -count=1 -timeout 20m

# The fixed-seed fault scenarios CI runs: every fault at least once
# (test/robustness, docs/robustness.md). Needs root, for the tmpfs of the
# disk-full fault.
test-robustness-ci:
	ROBUSTNESS_SUMMARY=$(CURDIR)/robustness-summary.txt \
	  $(GO) test -count=1 -timeout 15m -run '^TestRobustness$$' ./test/robustness
	@cat robustness-summary.txt

# Random scenarios (fault x traffic x cluster size 1/3/5) for ROBUSTNESS_FOR,
# each result appended to ROBUSTNESS_REPORT; a failing history is saved as
# porcupine's HTML view under ROBUSTNESS_ARTIFACTS. Seed: ROBUSTNESS_SEED.
ROBUSTNESS_FOR    ?= 10m
ROBUSTNESS_REPORT ?= robustness-report.jsonl
test-robustness:
	ROBUSTNESS_FOR=$(ROBUSTNESS_FOR) ROBUSTNESS_REPORT=$(ROBUSTNESS_REPORT) ROBUSTNESS_SUMMARY=$(CURDIR)/robustness-summary.txt \
	  $(GO) test -count=1 -timeout 0 -v -run '^TestRobustness$$' ./test/robustness
	@cat robustness-summary.txt

test-unit:
	$(GO) test -race $$($(GO) list ./... | grep -v /test/)

test-e2e: etcd-ref kine-ref
	$(GO) test -race -timeout 20m ./test/...

# Each fuzz target for FUZZTIME.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Go micro-benchmarks of the storage layers.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./mvcc/ ./raftlog/

# Ballast against etcd v3.7 on this machine (docs/benchmarks.md).
bench-compare: etcd-ref build
	BALLAST_BIN=bin/ballast ETCD_BIN=bin/etcd $(GO) run ./test/bench -out docs/bench-latest.md

# Three-member Ballast against three-member etcd v3.7 on this machine: puts,
# ranges, lists, watch fan-out, the Kubernetes profile (closed loop and
# paced), RSS and the leader-kill write gap (docs/benchmarks.md).
bench-cluster: etcd-ref build
	BALLAST_BIN=bin/ballast ETCD_BIN=bin/etcd $(GO) run ./test/bench -cluster 3 -out docs/bench-cluster-latest.md

# Put latency while a 1 GiB store defragments, Ballast against etcd v3.7.
bench-defrag: etcd-ref build
	BALLAST_BIN=bin/ballast ETCD_BIN=bin/etcd $(GO) run ./test/bench -only defrag -rounds 1 -out docs/bench-defrag-latest.md

# Latency over a simulated WAN of three regions, Ballast against etcd v3.7,
# and Ballast's time to restore its voters after losing a region.
# The SQL mirror under ballast bench put with 100 clients (docs/benchmarks.md).
bench-sqlbridge: build
	BALLAST_BIN=bin/ballast $(GO) test -run '^$$' -bench 'BenchmarkMirror' -benchtime 1x -count 3 -timeout 30m ./test/sqlbridge/

bench-regions: etcd-ref build
	BALLAST_BIN=bin/ballast ETCD_BIN=bin/etcd $(GO) test -run '^$$' -bench 'BenchmarkRegionsLatency' -benchtime 200x -timeout 30m ./test/e2e/
	BALLAST_BIN=bin/ballast $(GO) test -run '^$$' -bench 'BenchmarkRegionsLossRestore' -benchtime 3x -timeout 30m ./test/e2e/

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	cd test/kubernetes && $(GO) vet ./...
	$(GO) test -run TestLayers ./test/layers/

verify: lint test

clean:
	rm -rf bin
