# icebox: `make test` is the one test command (CI runs it through .ci/run).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GOBIN   ?= $(shell $(GO) env GOPATH)/bin

GOLANGCI_LINT_VERSION := v2.15.0
HELM_VERSION          := v3.22.0
PEBBLE_VERSION        := v2.10.3
export PATH := $(GOBIN):$(PATH)

# What the tests run besides Go, as COMMAND:DEBIAN_PACKAGE[:SERVICE_TO_KEEP_STOPPED].
TEST_DEPS := turnutils_uclient:coturn:coturn chromium:chromium firefox-esr:firefox-esr node:nodejs npm:npm \
	systemd-analyze:systemd redis-server:redis-server:redis-server promtool:prometheus:prometheus
# npm packages the tests run (TypeScript for the SDK's types), pinned by this lock file.
NPM_TOOLS := signaling/web/typecheck

.PHONY: help build test deps bench bench-nodes lint screenshot

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/icebox (static, version stamped)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/icebox ./cmd/icebox

deps: ## Install what the tests need, if missing (apt-get needs root; Go tools at pinned versions)
	@.ci/install-deps $(TEST_DEPS)
	@command -v helm >/dev/null 2>&1 || { echo "installing helm $(HELM_VERSION)"; $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@if command -v npm >/dev/null 2>&1 && { [ ! -f $(NPM_TOOLS)/node_modules/.ci-done ] || \
		[ $(NPM_TOOLS)/package-lock.json -nt $(NPM_TOOLS)/node_modules/.ci-done ]; }; then \
		echo "npm ci in $(NPM_TOOLS)"; (cd $(NPM_TOOLS) && npm ci --no-audit --no-fund --loglevel=error) && \
		touch $(NPM_TOOLS)/node_modules/.ci-done; fi
	@for t in pebble pebble-challtestsrv; do \
		$(GO) version -m "$(GOBIN)/$$t" 2>/dev/null | grep -Eq "pebble/v2[[:space:]]+$(PEBBLE_VERSION)[[:space:]]" || \
		{ echo "installing $$t $(PEBBLE_VERSION) (the ACME test CA)"; $(GO) install github.com/letsencrypt/pebble/v2/cmd/$$t@$(PEBBLE_VERSION) || exit 1; }; \
	done

test: deps ## Every test, as CI runs it: gofmt check, go vet, go test -race (the unit packages and e2e/ side by side)
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then \
		echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd e2e && $(GO) vet ./...
	@echo "$(GO) test -race -timeout 14m ./...   # and, at the same time, in e2e/"; \
	$(GO) test -race -timeout 14m ./... & unit=$$!; \
	(cd e2e && $(GO) test -race -timeout 14m ./...) & e2e=$$!; \
	wait $$unit; u=$$?; wait $$e2e; e=$$?; [ $$u -eq 0 ] && [ $$e -eq 0 ]

COTURN ?= turnserver

bench: build deps ## icebox against coturn (COTURN=/path/to/turnserver, default Debian's) and a Node ws relay: writes BENCHMARKS.md (about 35 minutes)
	$(GO) build -o bin/icebench ./cmd/icebench
	cd bench/signal-node && npm ci --no-audit --no-fund
	$(GO) test -run '^$$' -bench . -benchmem ./stunturn/ | grep -E '^(Benchmark|goos|goarch|cpu)' > bin/micro.txt
	bin/icebench compare -icebox bin/icebox -coturn $(COTURN) -rounds 5 -micro bin/micro.txt -profile-dir bin -out BENCHMARKS.md

bench-nodes: build ## Cross-node signaling latency: one redis-server, two icebox nodes, icebench signal -url2 (RATE=1000)
	$(GO) build -o bin/icebench ./cmd/icebench
	@set -e; E="ICEBOX_SIGNALING_REDIS_URL=redis://127.0.0.1:16379/0 ICEBOX_LOG_LEVEL=warn ICEBOX_SIGNALING_RATE_LIMIT=0 ICEBOX_HTTP_RATE_LIMIT=0 \
	  ICEBOX_SIGNALING_MAX_CONNS_PER_IP=0 ICEBOX_CREDENTIALS_SECRETS=bench"; \
	redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no --loglevel warning & R=$$!; sleep 0.5; \
	env $$E bin/icebox serve --http.listen 127.0.0.1:18081 --turn.udp_listen 127.0.0.1:13478 --turn.tcp_listen 127.0.0.1:13478 & A=$$!; \
	env $$E bin/icebox serve --http.listen 127.0.0.1:18082 --turn.udp_listen 127.0.0.1:13479 --turn.tcp_listen 127.0.0.1:13479 & B=$$!; \
	sleep 1.5; trap 'kill $$A $$B $$R 2>/dev/null' EXIT; \
	bin/icebench signal -url ws://127.0.0.1:18081/ws -clients 1000 -room-size 4 -rate $(or $(RATE),1000) -label one-node; \
	bin/icebench signal -url ws://127.0.0.1:18081/ws -url2 ws://127.0.0.1:18082/ws -clients 1000 -room-size 4 -rate $(or $(RATE),1000) -label cross-node

lint: ## golangci-lint (installed at a pinned version if missing)
	@[ -x "$(GOBIN)/golangci-lint" ] && "$(GOBIN)/golangci-lint" version 2>/dev/null | grep -q "$(GOLANGCI_LINT_VERSION:v%=%)" || \
		$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	"$(GOBIN)/golangci-lint" run ./...
	cd e2e && "$(GOBIN)/golangci-lint" run ./...

screenshot: ## Regenerate the pictures of the demo in docs/ (desktop, phone, six people; from the layout test)
	@mkdir -p docs
	cd e2e && ICEBOX_DOCS=$(CURDIR)/docs $(GO) test -count=1 -run '^TestDemoLayout$$' ./...
