# banger: disposable Linux microVMs in one command.
PREFIX  ?= /usr/local
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git -c safe.directory='*' describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X banger/internal/version.Version=$(VERSION)
export BANGER_FIXTURES ?= /var/tmp/banger-fixtures

.PHONY: help build install deps test unit e2e fixtures bench soak fuzz lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build banger, bangerd and the static banger-agent into bin/
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/banger ./cmd/banger
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS) -s -w" -o bin/banger-agent ./cmd/banger-agent

deps: ## install the host packages banger needs (apt-get; needs root)
	scripts/install-deps.sh

install: deps build ## install host packages and the binaries under PREFIX (needs root)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/banger
	install -m 0755 bin/banger bin/bangerd $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 bin/banger-agent $(DESTDIR)$(PREFIX)/lib/banger/banger-agent

test: unit e2e ## run unit and end-to-end tests (e2e needs root, QEMU and network namespaces)

unit: ## run the unit tests (no root needed; tests that need it skip)
	$(GO) test ./...

fixtures: ## fetch the Debian kernel package and build the test rootfs into $BANGER_FIXTURES
	scripts/fixtures.sh

e2e: build fixtures ## run the end-to-end tests: real daemon, real VMs under QEMU
	BANGER_E2E=1 BANGER_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -timeout 45m -v ./test/e2e/

bench: build fixtures ## benchmarks: banger against the bare tool, side by side
	BANGER_E2E=1 BANGER_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -timeout 30m -run '^$$' -bench . -benchtime 3x ./test/e2e/

soak: build fixtures ## boot N times (SOAK=50) and report hangs, median and p95 time to agent-ready
	BANGER_E2E=1 BANGER_BIN_DIR=$(CURDIR)/bin BANGER_SOAK=$${SOAK:-50} $(GO) test -count=1 -timeout 60m -v -run TestSoak ./test/e2e/

FUZZTIME ?= 60s
fuzz: ## run each fuzz target for FUZZTIME (default 60s)
	@for t in $$($(GO) test -list '^Fuzz' ./internal/image | grep ^Fuzz); do \
		echo "fuzz: $$t for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./internal/image || exit 1; \
	done

lint: ## gofmt, go vet, and golangci-lint when installed
	@test -z "$$(gofmt -l cmd internal test)" || (gofmt -l cmd internal test; exit 1)
	$(GO) vet ./...
	@if command -v golangci-lint >/dev/null; then golangci-lint run; fi

clean: ## remove bin/
	rm -rf bin
