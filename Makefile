# kvm-clone: `make demo` tries it on a local lab, `make test` runs the whole test suite.
# Both install what they need first (Debian packages as root, then a venv in .venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KVM_CLONE := $(BIN)/kvm-clone
PYTEST_ARGS ?=
LOCK := requirements/dev.lock

# Debian 12 packages: libvirt + QEMU + sshd for the lab hosts, headers to build libvirt-python,
# busybox-static + cpio for the lab's booting guest, genisoimage/ovmf for the sample VMs.
APT_PACKAGES := libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients \
	qemu-system-x86 qemu-utils openssh-server openssh-client libvirt-dev pkg-config gcc \
	python3 python3-dev python3-venv busybox-static cpio ovmf genisoimage util-linux iproute2 procps \
	rsync zstd tmux librsvg2-bin swtpm swtpm-tools

.PHONY: help deps apt venv lock lab-up lab-down lab-status demo test lint typecheck pytest format screenshots clean

help:
	@echo "make demo      install what is needed, start the lab, open the TUI on it"
	@echo "make test      install what is needed, start the lab, run lint, types and all tests"
	@echo "make lab-down  stop the lab (its files stay; 'kvm-clone lab down --purge' deletes them)"
	@echo "make lock      refresh requirements/dev.lock (the exact versions make and CI install)"

deps: apt venv

apt:
	@missing=$$(dpkg-query -W -f='$${db:Status-Abbrev} $${binary:Package}\n' $(APT_PACKAGES) 2>/dev/null \
		| awk '$$1 != "ii" {print $$2}'; for p in $(APT_PACKAGES); do \
		dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi

# Every target that needs the venv reaches it through `venv`, and the venv needs the Debian packages
# first (libvirt-python builds against libvirt-dev): the order-only `| apt` runs apt's check before
# any pip install, whatever the target.
venv: $(VENV)/.installed

# The venv holds exactly the versions in requirements/dev.lock (hash-checked), then kvm-clone itself
# (editable, built without fetching anything more). pyproject.toml keeps ranges for users.
$(VENV)/.installed: pyproject.toml $(LOCK) | apt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Refresh the lock from pyproject.toml's ranges (newest releases that fit), for Debian 12's Python.
lock: venv
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra dev --generate-hashes \
		--python-version 3.11 --python-platform linux --no-header --upgrade -o $(LOCK)

lab-up: deps
	$(KVM_CLONE) lab up

lab-down:
	@if [ -x $(KVM_CLONE) ]; then $(KVM_CLONE) lab down; fi

lab-status:
	$(KVM_CLONE) lab status

demo: lab-up
	KVM_CLONE_CONFIG=$$($(KVM_CLONE) lab path)/config.yaml $(KVM_CLONE) tui

lint: venv
	$(BIN)/ruff check kvm_clone_tui tests scripts bench
	$(BIN)/ruff format --check kvm_clone_tui tests scripts bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

pytest: lab-up
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

format: venv
	$(BIN)/ruff format kvm_clone_tui tests scripts bench
	$(BIN)/ruff check --fix kvm_clone_tui tests scripts bench

screenshots: lab-up
	$(BIN)/python scripts/screenshots.py

clean: lab-down
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
