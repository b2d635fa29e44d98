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

.PHONY: setup demo test test-rust test-py bench lint clean

setup: .stamp-ext

$(VENV)/.stamp-deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "maturin==1.16.0"
	touch $@

# Editable build of the Rust extension plus runtime and dev dependencies.
.stamp-ext: $(VENV)/.stamp-deps $(RUST_SOURCES)
	$(VENV)/bin/maturin develop --release --extras dev -q
	touch $@

demo: setup
	$(VENV)/bin/sluicegate demo

test: setup test-rust test-py

test-rust:
	cargo test --workspace --exclude sluicegate-py -q

test-py: setup
	$(PY) -m pytest -q tests

bench: setup
	cargo bench -p sluicegate-core
	$(PY) -m pytest -q benches --benchmark-only

lint: setup
	$(VENV)/bin/ruff check --select F,E9 python tests benches
	cargo clippy --workspace -q -- -D warnings
	cargo fmt --all --check

clean:
	rm -rf $(VENV) .stamp-ext python/sluicegate/*.so
