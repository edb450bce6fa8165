# volboot — see README.md. Every target works offline except e2e-real and
# bench-real, which install the real stack from PyPI.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The release build: static (no cgo), reproducible paths, version stamped.
# The Dockerfile runs `make build`, and integration/dockerfile_test.go holds
# the two together.
BUILD_ENV   := CGO_ENABLED=0
BUILD_FLAGS := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
FUZZTIME ?= 2m

.PHONY: build test unit vet demo bench bench-real e2e-real fuzz clean

build:
	$(BUILD_ENV) $(GO) build $(BUILD_FLAGS) -o bin/volboot ./cmd/volboot

vet:
	$(GO) vet ./...

# The whole suite: vet, then unit and integration tests with the race
# detector (integration tests build their own binary with `make build`
# flags), then the demo. cmd/testreport prints what plain `go test` prints
# and then every skipped test with its reason, and exits as go test did.
# The MooseFS tests (TestMooseFS*, on a rig of their own) run in a second
# go test beside the rest: they wait on round trips and on faults that
# last seconds far more than they use the CPU, and one package's tests
# run one at a time. Their report prints after the rest's.
MOOSEFS_TESTS := ^TestMooseFS
test: vet
	$(GO) build -o bin/testreport ./cmd/testreport
	@bin/testreport $(GO) test -race -json -timeout 25m -run '$(MOOSEFS_TESTS)' ./integration >bin/moosefs-tests.out 2>&1 & mfs=$$!; \
	bin/testreport $(GO) test -race -json -timeout 25m -skip '$(MOOSEFS_TESTS)' ./...; rest=$$?; \
	wait $$mfs; moosefs=$$?; \
	echo "== the MooseFS tests ($(MOOSEFS_TESTS), run beside the rest)"; cat bin/moosefs-tests.out; \
	test $$rest = 0 -a $$moosefs = 0
	$(MAKE) demo

demo: build
	$(GO) run ./integration/demo -volboot bin/volboot

# Benchmarks print ratios against a baseline run side by side (curl, pip,
# python -m venv, unzip); they are not part of `make test`.
bench: build
	bash bench/run.sh

# The real F5 stack end to end (issue 22): the embedded manifest synced
# from PyPI onto a fresh volume on local disk and on the MooseFS rig, its
# imports, pip check and pip list against the lock, and the RunPod handler
# up to its model load. Needs PyPI and about 16 GB free per filesystem
# (checked); the MooseFS half needs root and Debian's moosefs packages.
# VOLBOOT_E2E_LOGS=DIR keeps each sync's log there.
e2e-real:
	VOLBOOT_E2E_REAL=1 $(GO) test -count=1 -v -timeout 90m -run '^TestE2ERealStack$$' ./integration

# Benchmark P14: volboot vs uv vs pip installing the real stack from PyPI,
# first and second install, on local disk and on the MooseFS rig (pip onto
# MooseFS, about 50 minutes, only with BENCH_REAL_FLAGS=-pip-moosefs).
bench-real: build
	$(GO) run ./bench/real -volboot bin/volboot $(BENCH_REAL_FLAGS)

# Every fuzz target in the tree for FUZZTIME each, one at a time.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
