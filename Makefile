# hybridxfer: make demo | test | bench | lint | fuzz
SHELL := /bin/bash
GO ?= go
PKGS := ./...
# The pure core must build and test without cgo.
PURE := ./groups/... ./hma/... ./specdec/... ./proptest/... ./oracle/... ./statexfer/plan/... ./kernels ./statexfer/transport/... ./statexfer/session/... ./statexfer/grant/...
# Compute-heavy byte-level checks: without -race (their concurrent parts
# run under -race separately).
HEAVY := ./statexfer/verify ./proptest
FUZZTIME ?= 30s

.PHONY: all deps build demo test test-pure test-race lint fuzz fuzz-long bench soak faults multinode

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(GO) build -o bin/hybridxfer ./cmd/hybridxfer

demo: build
	./bin/hybridxfer demo

# The whole suite: -race where it is cheap, the heavy byte-level checks
# without it (their concurrent tests again with it), then the pure core
# built and tested with CGO_ENABLED=0.
test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout 20m $$($(GO) list ./... | grep -vE '/(statexfer/verify|proptest)$$')
	$(GO) test -timeout 20m -skip 'TestServingSpeculative' $(HEAVY)
	$(GO) test -timeout 20m -run 'TestServingSpeculative' ./proptest -rapid.checks=300
	$(GO) test -timeout 10m -run 'TestMambaCacheModes' ./engine
	$(GO) test -race -timeout 10m -run 'TestInproc|TestVerifyCatches' ./statexfer/verify
	$(GO) test -race -timeout 10m -run 'TestServingEqualsMonolithic' ./proptest -rapid.checks=40
	CGO_ENABLED=0 $(GO) test -count=1 -timeout 10m $(PURE)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -run 'TestImportRules' ./internal/importrules/
	@# String methods are generated (stringer, a go.mod tool): regenerate and fail on a difference.
	$(GO) generate -run stringer ./...
	@out=$$(git diff --name-only -- '*_string.go'; git ls-files --others --exclude-standard -- '*_string.go'); if [ -n "$$out" ]; then echo "stringer output out of date (run go generate -run stringer ./... and commit):"; echo "$$out"; exit 1; fi

# Each fuzz target for FUZZTIME (go test runs one -fuzz target at a time).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

# Every fuzz target (found by grep, so new ones are included) one at a
# time for FUZZ_LONG_TIME each, -parallel 2, under a memory limit; prints
# execs per target and fails on a crasher or under FUZZ_LONG_MIN_EXECS in
# total (scripts/fuzz-long.sh lists its settings).
fuzz-long:
	GO=$(GO) bash scripts/fuzz-long.sh

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./...

# Long allocator/protocol state-machine runs: make soak CHECKS=10000
# (and the speculative serving and decoder properties, SPEC_CHECKS cases)
CHECKS ?= 5000
SPEC_CHECKS ?= 2000
soak:
	$(GO) test -count=1 -timeout 2h -run 'StateMachine|Property' ./proptest/ ./hma/ -rapid.checks=$(CHECKS)
	$(GO) test -count=1 -timeout 2h -run 'TestServingSpeculative|TestSpeculativeIsLossless' ./proptest/ ./oracle/refmodel/ -rapid.checks=$(SPEC_CHECKS)

# Fault campaign with real processes on 127.0.0.1 (not part of make test):
# 2 P x 3 D behind the proxy under load; kill -9, restart on the same
# ports, SIGSTOP past the lease, lost notifications. Prints one table.
faults: deps
	$(GO) test -tags faults -count=1 -timeout 20m -run TestFaultCampaign -v ./cmd/hybridxfer/ 2>&1 | grep -v '^=== RUN'; exit $${PIPESTATUS[0]}

# P and D on two "hosts": network namespaces joined by a veth pair (created
# and always removed by the test; needs root and curl), UCX over tcp; the
# link is cut mid-load and restored (docs/scaling.md). Not part of make test.
multinode: deps
	@command -v curl >/dev/null || apt-get install -y --no-install-recommends curl
	$(GO) test -tags multinode -count=1 -timeout 15m -run TestMultinode -v ./cmd/hybridxfer/ 2>&1 | grep -v '^=== RUN'; exit $${PIPESTATUS[0]}
