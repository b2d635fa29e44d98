# sluicegate — every target a newcomer needs. `make demo` and `make test` do their own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUSTC_VERSION := $(shell rustc --version 2>/dev/null | cut -d' ' -f2)
# Heavy Rust builds are cached outside the clone, keyed by compiler version.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/sluicegate/target-rustc-$(RUSTC_VERSION)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
RUST_SOURCES := $(shell find rust -name '*.rs' -o -name Cargo.toml) Cargo.toml Cargo.lock

.PHONY: setup demo test test-rust test-py bench bench-long soak lint clean kube-bins prometheus-bin tools tools-test redis-bin upstream-epp-bin inference-sim-bin

# Tool checks: each prints one line naming every missing or too old tool, then stops the build.
# Minimum versions come from the files that need them (pyproject.toml, Cargo.toml, go.mod).
PY_MIN := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' pyproject.toml)
RUST_MIN := $(shell sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' Cargo.toml)
GO_MIN := $(shell awk '$$1 == "go" {print $$2}' tests/kube/go.mod tests/prometheus/go.mod | sort -V | tail -1)
# ok if version $(1) >= $(2) (dotted numbers)
define version_ge
[ "$$(printf '%s\n%s\n' "$(2)" "$(1)" | sort -V | head -1)" = "$(2)" ]
endef

# $(1) = 1 checks Go as well.
define check_tools
	@missing=""; \
	pyv=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	if [ -z "$$pyv" ]; then missing="$$missing $(PYTHON) (>= $(PY_MIN))"; \
	elif ! $(call version_ge,$$pyv,$(PY_MIN)); then missing="$$missing $(PYTHON) >= $(PY_MIN) (found $$pyv)"; fi; \
	command -v cargo >/dev/null || missing="$$missing cargo (rustup.rs)"; \
	rv=$$(rustc --version 2>/dev/null | cut -d' ' -f2); \
	if [ -z "$$rv" ]; then missing="$$missing rustc (>= $(RUST_MIN), rustup.rs)"; \
	elif ! $(call version_ge,$$rv,$(RUST_MIN)); then missing="$$missing rustc >= $(RUST_MIN) (found $$rv)"; fi; \
	command -v cc >/dev/null || command -v gcc >/dev/null || missing="$$missing a C compiler (gcc or cc)"; \
	if [ "$(1)" = 1 ]; then gv=$$(go env GOVERSION 2>/dev/null | sed 's/^go//'); \
	  if [ -z "$$gv" ]; then missing="$$missing go (>= $(GO_MIN), go.dev/dl: make test builds kube-apiserver, etcd, helm and prometheus)"; \
	  elif ! $(call version_ge,$$gv,$(GO_MIN)); then missing="$$missing go >= $(GO_MIN) (found $$gv)"; fi; fi; \
	if [ -n "$$missing" ]; then echo "missing:$$missing"; exit 1; fi
endef

tools:
	$(call check_tools,0)

# `make test` also builds kube-apiserver, etcd, helm and Prometheus from source with Go.
tools-test:
	$(call check_tools,1)

# The real kube-apiserver and etcd for tests/kube, built from tests/kube/go.mod through the Go
# module proxy and cached outside the clone per Kubernetes version (skipped when present).
KUBE_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2}' tests/kube/go.mod)
KUBE_BINS := $(HOME)/.cache/sluicegate/kube-$(KUBE_VERSION)
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION)))
# The real helm CLI for the chart tests (lint, template, rendered manifests applied in tests/kube).
HELM_VERSION := v3.19.5
HELM_BIN := $(HOME)/.cache/sluicegate/helm-$(HELM_VERSION)
# The real Prometheus server the optimizer's collector tests query, built from
# tests/prometheus/go.mod through the Go module proxy (service discovery left out: the tests
# use static targets) and cached outside the clone per version.
PROMETHEUS_VERSION := $(shell awk '$$1 == "github.com/prometheus/prometheus" {print $$2}' tests/prometheus/go.mod)
PROMETHEUS_BIN := $(HOME)/.cache/sluicegate/prometheus-$(PROMETHEUS_VERSION)

# The real upstream EPP (llm-d-router's Go `epp`) that benches/quality runs beside sluicegate
# (SLUICEGATE_QUALITY_UPSTREAM=1; not part of `make test`), at the commit sluicegate follows
# (benches/quality/upstream/version), cached outside the clone per version (skipped when present).
# Through the Go module proxy first; a proxy that will not serve llm-d-router (403) falls back to
# its source from git (UPSTREAM_EPP_GIT: a local mirror when there is one), built as its
# Dockerfile.epp builds it (CGO_ENABLED=0), its dependencies from the module proxy.
UPSTREAM_EPP_COMMIT := $(shell awk '$$1 == "commit" {print $$2}' benches/quality/upstream/version)
UPSTREAM_EPP_VERSION := $(shell awk '$$1 == "version" {print $$2}' benches/quality/upstream/version)
UPSTREAM_EPP_BIN := $(HOME)/.cache/sluicegate/llm-d-router-$(UPSTREAM_EPP_VERSION)
UPSTREAM_EPP_GIT ?= $(or $(wildcard /work/.mirror/llm-d+llm-d-router/repo),https://github.com/llm-d/llm-d-router.git)
UPSTREAM_EPP_LDFLAGS := -s -w -X github.com/llm-d/llm-d-router/version.CommitSHA=$(UPSTREAM_EPP_COMMIT)

# llm-d-inference-sim, llm-d's own model-server simulator (it publishes KV events keyed as
# llm-d's indexer keys blocks): tests/integration/test_inference_sim_interop.py and the
# quality bench's third-party fleet run it when it is built (not part of `make test`: its source
# comes from git, INFERENCE_SIM_GIT, a local mirror when there is one). The module proxy serves
# neither it nor llm-d-router (403), so its llm-d-router requirement is replaced by the upstream
# EPP's source at the commit above; its other dependencies come from the proxy.
INFERENCE_SIM_COMMIT := $(shell awk '$$1 == "commit" {print $$2}' benches/quality/upstream/inference-sim-version)
INFERENCE_SIM_BIN := $(HOME)/.cache/sluicegate/llm-d-inference-sim-$(INFERENCE_SIM_COMMIT)
INFERENCE_SIM_GIT ?= $(or $(wildcard /work/.mirror/llm-d+llm-d-inference-sim/repo),https://github.com/llm-d/llm-d-inference-sim.git)

setup: .stamp-ext

$(VENV)/.stamp-deps: pyproject.toml | tools
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "maturin==1.16.0"
	touch $@

# Editable build of the Rust extension plus runtime and dev dependencies.
.stamp-ext: $(VENV)/.stamp-deps $(RUST_SOURCES)
	$(VENV)/bin/maturin develop --release --extras dev -q
	touch $@

demo: setup
	$(VENV)/bin/sluicegate demo

test: tools-test setup kube-bins helm-bin prometheus-bin redis-bin test-rust test-py

kube-bins: $(KUBE_BINS)/.built

# Keyed by version, not by go.mod's mtime: a fresh clone reuses the cache.
$(KUBE_BINS)/.built: | tools-test
	cd tests/kube && GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -ldflags "$(KUBE_LDFLAGS)" \
		-o $(KUBE_BINS)/ k8s.io/kubernetes/cmd/kube-apiserver ./cmd/etcd
	touch $@

# The real redis-server for the shared precise-prefix index tests (Debian's package), installed
# when missing; the tests start it on 127.0.0.1 on a free port and stop it.
redis-bin:
	command -v redis-server >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server)

prometheus-bin: $(PROMETHEUS_BIN)/.built

# Keyed by version, not by go.mod's mtime: a fresh clone reuses the cache.
$(PROMETHEUS_BIN)/.built: | tools-test
	cd tests/prometheus && GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -tags remove_all_sd \
		-o $(PROMETHEUS_BIN)/ github.com/prometheus/prometheus/cmd/prometheus
	touch $@

# $(1): git source (directory or URL), $(2): commit, $(3): destination directory (replaced).
define git_export
rm -rf $(3) && mkdir -p $(3) && \
if [ -d "$(1)" ]; then git -C "$(1)" archive $(2) | tar -x -C $(3); \
else git clone -q "$(1)" $(3) && git -C $(3) checkout -q $(2); fi
endef

upstream-epp-bin: $(UPSTREAM_EPP_BIN)/epp

$(UPSTREAM_EPP_BIN)/epp: | tools-test
	GOBIN=$(UPSTREAM_EPP_BIN) CGO_ENABLED=0 go install -trimpath -ldflags "$(UPSTREAM_EPP_LDFLAGS)" \
		github.com/llm-d/llm-d-router/cmd/epp@$(UPSTREAM_EPP_VERSION) || { \
	$(call git_export,$(UPSTREAM_EPP_GIT),$(UPSTREAM_EPP_COMMIT),$(UPSTREAM_EPP_BIN)/src) && \
	cd $(UPSTREAM_EPP_BIN)/src && CGO_ENABLED=0 go build -trimpath -ldflags "$(UPSTREAM_EPP_LDFLAGS)" -o $@.tmp ./cmd/epp && \
	mv $@.tmp $@; }

inference-sim-bin: $(INFERENCE_SIM_BIN)/llm-d-inference-sim

$(INFERENCE_SIM_BIN)/llm-d-inference-sim: | tools-test
	$(call git_export,$(INFERENCE_SIM_GIT),$(INFERENCE_SIM_COMMIT),$(INFERENCE_SIM_BIN)/src)
	$(call git_export,$(UPSTREAM_EPP_GIT),$(UPSTREAM_EPP_COMMIT),$(INFERENCE_SIM_BIN)/llm-d-router)
	cd $(INFERENCE_SIM_BIN)/src && go mod edit -replace github.com/llm-d/llm-d-router=../llm-d-router && \
	GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $@.tmp ./cmd/llm-d-inference-sim && \
	mv $@.tmp $@

helm-bin: $(HELM_BIN)/helm

$(HELM_BIN)/helm: | tools-test
	GOBIN=$(HELM_BIN) go install -trimpath \
		-ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

test-rust:
	cargo test --workspace --exclude sluicegate-py -q

test-py: setup
	$(PY) -m pytest -q tests

bench: setup
	cargo bench -p sluicegate-core
	$(PY) -m pytest -q benches --benchmark-only

# The long forms: 20 s load steps up to 1600 req/s, 10k held streams, 2000-request CPU runs.
bench-long: setup
	SLUICEGATE_BENCH_LONG=1 $(PY) -m pytest -q benches/load --benchmark-only -s

# Reliability long forms: 1M fuzz cases per property, 20k-message hypothesis runs, a 30-minute
# soak and 10k held streams (tests/reliability; short forms run in `make test`).
soak: setup
	SLUICEGATE_SOAK=1 cargo test --release -p sluicegate-core --test fuzz_inputs
	SLUICEGATE_SOAK=1 $(PY) -m pytest -q -s tests/reliability --timeout 7200

lint: setup
	$(VENV)/bin/ruff check --select F,E9 python tests benches
	cargo clippy --workspace --tests -q -- -D warnings
	cargo fmt --all --check
	$(PY) -m mypy.stubtest sluicegate._core

clean:
	rm -rf $(VENV) .stamp-ext python/sluicegate/*.so
