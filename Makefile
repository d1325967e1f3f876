# banger: disposable Linux microVMs in one command.
PREFIX  ?= /usr/local
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git -c safe.directory='*' describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X banger/internal/version.Version=$(VERSION)
export BANGER_FIXTURES ?= /var/tmp/banger-fixtures
# Test output goes through bin/skipsummary; a pipe must not hide go test's exit code.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
# Boots of the systemd fixture that make e2e (and so make test) soaks; make soak does 50.
E2E_SOAK    ?= 10
E2E_LIFE_SOAK ?= 8x4
# Where e2e tests keep their artifacts (the web UI's screenshots): DIR/_artifacts/<n>/.
E2E_ARTIFACTS ?= $(CURDIR)/bin/e2e-artifacts

.PHONY: help build crash install deps test unit unit-run e2e e2e-run fixtures bench soak fuzz lint web-assets clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build banger, bangerd and the static banger-agent into bin/
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/banger ./cmd/banger
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS) -s -w" -o bin/banger-agent ./cmd/banger-agent

# bin/crash/ holds the same binaries built with the bangercrash tag: their
# daemon dies at BANGER_CRASH_AT (internal/crashpoint). Only the e2e crash
# matrix runs them; build and install never make them.
crash: ## build bin/crash/: banger, bangerd, banger-agent with crash points (tests only)
	$(GO) build -tags bangercrash -ldflags "$(LDFLAGS)" -o bin/crash/banger ./cmd/banger
	$(GO) build -tags bangercrash -ldflags "$(LDFLAGS)" -o bin/crash/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -tags bangercrash -ldflags "$(LDFLAGS) -s -w" -o bin/crash/banger-agent ./cmd/banger-agent

deps: ## install the host packages banger needs (apt-get; needs root)
	scripts/install-deps.sh

install: deps build ## install host packages and the binaries under PREFIX (needs root)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/banger
	install -m 0755 bin/banger bin/bangerd $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 bin/banger-agent $(DESTDIR)$(PREFIX)/lib/banger/banger-agent

test: build crash fixtures bin/skipsummary ## fixtures, unit and end-to-end tests (root, QEMU, netns), then what skipped and why
	@rm -f bin/test-unit.json bin/test-e2e.json; st=0; \
	$(MAKE) --no-print-directory unit-run || st=1; \
	$(MAKE) --no-print-directory e2e-run || st=1; \
	bin/skipsummary -summary $(if $(CI),-strict) bin/test-unit.json bin/test-e2e.json || st=1; \
	exit $$st

unit: bin/skipsummary ## run the unit tests (no root needed; tests that need it skip, and fail under CI)
	@$(MAKE) --no-print-directory unit-run; st=$$?; bin/skipsummary -summary bin/test-unit.json; exit $$st

unit-run:
	{ st=0; $(GO) test -json ./... || st=1; $(GO) test -json -tags bangercrash ./internal/crashpoint/ || st=1; exit $$st; } \
		| bin/skipsummary -save bin/test-unit.json

bin/skipsummary: $(wildcard test/skipsummary/*.go internal/prereq/*.go)
	$(GO) build -o $@ ./test/skipsummary

fixtures: ## fetch the Debian kernel package and build the test rootfs into $BANGER_FIXTURES
	scripts/fixtures.sh

e2e: build crash fixtures bin/skipsummary ## end-to-end tests: real daemon, real VMs under QEMU, a soak of E2E_SOAK=10 boots
	@$(MAKE) --no-print-directory e2e-run; st=$$?; bin/skipsummary -summary bin/test-e2e.json; exit $$st

e2e-run:
	mkdir -p $(E2E_ARTIFACTS) && BANGER_E2E=1 BANGER_BIN_DIR=$(CURDIR)/bin BANGER_CRASH_BIN_DIR=$(CURDIR)/bin/crash BANGER_SOAK=$(E2E_SOAK) BANGER_LIFE_SOAK=$(E2E_LIFE_SOAK) $(GO) test -json -count=1 -timeout 75m -artifacts -outputdir $(E2E_ARTIFACTS) ./test/e2e/ \
		| bin/skipsummary -v -save bin/test-e2e.json

bench: build fixtures ## benchmarks: banger against the bare tool, side by side
	BANGER_E2E=1 BANGER_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -timeout 30m -run '^$$' -bench . -benchtime 3x ./test/e2e/

soak: build fixtures ## boot N times (SOAK=50), then LIFE_SOAK=25x8 create/exec/fork-or-snapshot/delete cycles, 8 at once (the full one: LIFE_SOAK=100x8), with resource counts before and after
	BANGER_E2E=1 BANGER_BIN_DIR=$(CURDIR)/bin BANGER_SOAK=$${SOAK:-50} BANGER_LIFE_SOAK=$${LIFE_SOAK:-25x8} $(GO) test -count=1 -timeout 90m -v -run 'TestSoak|TestLifeSoak' ./test/e2e/

FUZZTIME ?= 60s
FUZZ_PKGS ?= ./internal/image ./internal/guest
fuzz: ## run each fuzz target (OCI import, agent answers) for FUZZTIME (default 60s)
	@for p in $(FUZZ_PKGS); do \
		for t in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			echo "fuzz: $$p $$t for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
		done; \
	done

lint: ## gofmt, go vet, and golangci-lint when installed
	@test -z "$$(gofmt -l cmd internal test)" || (gofmt -l cmd internal test; exit 1)
	$(GO) vet ./...
	@if command -v golangci-lint >/dev/null; then golangci-lint run; fi

web-assets: ## re-fetch the vendored xterm.js from the npm registry and check it against its SHA256SUMS
	./scripts/web-assets.sh

clean: ## remove bin/
	rm -rf bin
