# The README's two commands: `make demo` and `make test`. Each installs what it needs itself.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEBS := keepalived redis-server redis-sentinel openssh-server openipmi ipmitool fence-agents socat nftables iproute2 procps
STAMP_DEBS := $(VENV)/.debs-installed
STAMP_VENV := $(VENV)/.venv-installed

.PHONY: install test lint typecheck unit demo clean

install: $(STAMP_DEBS) $(STAMP_VENV)

$(STAMP_DEBS):
	@if [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $(DEBS); \
	else \
		missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then echo "make install: not root; install these Debian packages first:$$missing" >&2; exit 1; fi; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_VENV): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q --hypothesis-show-statistics

test: lint typecheck unit

# The main job: a two-node lab of real keepalived with VRRP cut at both nodes, run twice: keepalived alone
# (lab-report/alone), then with the arbiter on every node (lab-report/arbiter); both timelines and figures side
# by side, and a picture of each (timeline.svg). Builds and tears down everything itself; about a minute.
demo: install
	$(BIN)/keepalived-arbiter check-config --offline -c deploy/arbiter.toml.example
	@echo "vrrp-cut, keepalived alone ..."
	$(BIN)/keepalived-arbiter lab run vrrp-cut --report lab-report/alone > /dev/null
	@echo "vrrp-cut, with the arbiter ..."
	$(BIN)/keepalived-arbiter lab run vrrp-cut --arbiter --report lab-report/arbiter > /dev/null
	$(BIN)/keepalived-arbiter lab compare lab-report/alone lab-report/arbiter

# Issue 12's transitions table (start-up, restarts, returns, preemption), keepalived alone beside the arbiter,
# with its goals; not part of `make test` (about an hour for the whole matrix). A subset:
# `make bench-transitions BENCH_ARGS="--quick --scenarios cold-start,return-preempt"`.
.PHONY: bench-transitions
bench-transitions: install
	$(BIN)/keepalived-arbiter lab bench transitions $(BENCH_ARGS)

# Issue 14's fast adverts made safe: VRRPv3 0.05 s with 10 % VRRP loss for 60 s, keepalived alone beside the
# arbiter, and the power-off failover at the same settings (a few minutes). `BENCH_ARGS="--seconds 20 --runs 1"`.
.PHONY: bench-loss
bench-loss: install
	$(BIN)/keepalived-arbiter lab bench loss $(BENCH_ARGS)

# Issue 14's soak: 100 chaos schedules of 60 s (2 and 3 nodes; VRRPv2/1 s and VRRPv3/0.1 s in turn), each with
# the arbiter and with keepalived alone; prints the table and exits 1 when the arbiter has any violation or stale
# write. Several hours; results go to lab-report/soak/soak.jsonl as they come, and a stopped soak resumes there.
# A subset: `make soak SOAK_ARGS="--count 8 --duration 60"`.
.PHONY: soak
soak: install
	$(BIN)/keepalived-arbiter lab soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Install the agent on this node (root): venv in /opt/keepalived-arbiter, unit + keepalived drop-in, config
# skeleton and heartbeat key (never overwritten). Does not enable or start anything. E.g. `make install-node
# INSTALL_ARGS=--no-systemctl DESTDIR=/tmp/root` to stage.
.PHONY: install-node
install-node:
	DESTDIR="$(DESTDIR)" sh deploy/install.sh $(INSTALL_ARGS)
