# The front door. `make test` and `make run` work on a fresh clone with Python >= 3.11 and Node.js >= 20
# (and Python 3.9 for the agent's oldest-Python tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PKGS   := edgemon-protocol edgemon-core plugins/edgemon-cpu plugins/edgemon-disk plugins/edgemon-gpu-nvml server
PYPROJECTS := $(foreach p,$(PKGS),$(p)/pyproject.toml)
# The example third-party plugin is installed for the tests only, outside the venv (`make run` never
# loads it): tests/conftest.py puts this directory on the path of the tests and the agents they start.
EXAMPLE    := examples/edgemon-example
TEST_SITE  := var/test-plugins

# The agent (edgemon-core and the plugins) supports Python 3.9+ (Debian 11, Ubuntu 22.04, JetPack 6);
# `make test` also runs its tests under the oldest such Python: $(OLDEST_PYTHON), else pyenv's 3.9.x.
OLDEST     ?= 3.9
PYENV_ROOT ?= $(or $(shell pyenv root 2>/dev/null),$(HOME)/.pyenv)
OLDEST_PYTHON ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/$(OLDEST).*/bin/python3 /usr/bin/python$(OLDEST)))
VENV_OLD   := .venv$(subst .,,$(OLDEST))
AGENT_TESTS := tests/protocol tests/core tests/plugins tests/transport

NPM_STAMP := frontend/node_modules/.installed
DASHBOARD := server/src/edgemon_server/static/index.html

.PHONY: bundle fuzz pytest-oldest install lint typecheck pytest test run bench clean system-deps system-deps-run dashboard frontend-test

$(STAMP): $(PYPROJECTS) requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e edgemon-protocol -e 'edgemon-core[test]' $(foreach p,$(filter-out edgemon-protocol edgemon-core server,$(PKGS)),-e $(p)) -e 'server[test,demo]' -r requirements-dev.txt
	touch $@

# A real third-party plugin, installed the way users install one (not editable), where only the tests see it.
$(TEST_SITE)/.installed: $(STAMP) $(EXAMPLE)/pyproject.toml $(wildcard $(EXAMPLE)/src/*/*.py)
	rm -rf $(TEST_SITE)
	$(BIN)/python -m pip install -q --no-deps --target $(TEST_SITE) ./$(EXAMPLE)
	touch $@

$(NPM_STAMP): frontend/package.json frontend/package-lock.json
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null || \
	    { echo "Node.js >= 20 with npm is needed for the dashboard (https://nodejs.org or your OS's package)"; exit 1; }
	@# `npm install`, not `npm ci`: vite lists a Windows-only optional package the registry here lacks,
	@# which `npm ci` refuses as "missing from the lock file"; `npm install` keeps the locked versions.
	cd frontend && npm install --no-audit --no-fund --loglevel=error
	touch $@

# The dashboard is built into the server package, which serves it at /.
$(DASHBOARD): $(NPM_STAMP) $(wildcard frontend/src/*) frontend/index.html frontend/vite.config.ts
	cd frontend && npm run build --silent

install: $(STAMP) $(NPM_STAMP)

dashboard: $(DASHBOARD)

frontend-test: $(NPM_STAMP)
	cd frontend && npx tsc --noEmit && npx vitest run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The transport tests start their own mosquitto (a real broker with mutual TLS); the
# storage tests also run against a real PostgreSQL on 127.0.0.1:5432 (EDGEMON_TEST_PG). When this target
# installs PostgreSQL itself, it lets user postgres in over 127.0.0.1 without a password (a fresh
# Debian cluster asks for one over TCP), as the tests connect.
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; \
	    else \
	        echo "mosquitto is needed by the tests: sudo apt-get install mosquitto (or your OS's package)"; exit 1; \
	    fi; \
	fi
	@if [ -z "$$EDGEMON_TEST_PG" ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
	    if ! command -v pg_ctlcluster >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	        ver=$$(ls /etc/postgresql | tail -1); \
	        sed -i '1i host all postgres 127.0.0.1/32 trust' /etc/postgresql/$$ver/main/pg_hba.conf; \
	    fi; \
	    if command -v pg_ctlcluster >/dev/null 2>&1; then \
	        pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | tail -1) main start || true; \
	    fi; \
	    for i in 1 2 3 4 5 6 7 8 9 10; do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	    pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is needed on 127.0.0.1:5432 (or set EDGEMON_TEST_PG)"; exit 1; }; \
	fi
	@# The dashboard's end-to-end test drives Debian's chromium (no browser download).
	@if [ ! -x /usr/bin/chromium ] && [ -z "$$CHROMIUM" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	    else \
	        echo "chromium is needed by the dashboard test: sudo apt-get install chromium (or set CHROMIUM=/path)"; exit 1; \
	    fi; \
	fi

pytest: install $(TEST_SITE)/.installed system-deps dashboard
	$(BIN)/pytest

# The agent's suite under the oldest supported Python, in its own venv (agent and plugins only).
$(VENV_OLD)/.installed: $(PYPROJECTS)
	@test -n "$(OLDEST_PYTHON)" || { echo "Python $(OLDEST) is needed for the agent's oldest-Python tests: install it (pyenv install $(OLDEST)) or set OLDEST_PYTHON=/path/to/python$(OLDEST)"; exit 1; }
	test -x $(VENV_OLD)/bin/python || $(OLDEST_PYTHON) -m venv $(VENV_OLD)
	$(VENV_OLD)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(VENV_OLD)/bin/python -m pip install -q -e edgemon-protocol -e 'edgemon-core[test]' $(foreach p,$(filter plugins/%,$(PKGS)),-e $(p))
	touch $@

pytest-oldest: $(VENV_OLD)/.installed $(TEST_SITE)/.installed system-deps
	$(VENV_OLD)/bin/python -m pytest -q $(AGENT_TESTS) examples

test: lint typecheck frontend-test pytest pytest-oldest

# An offline agent bundle for a device: dist/edgemon-agent-<version>-py<python>-<arch>.tar.gz with every
# wheel and install.sh. BUNDLE_PYTHON: the device's Python (3.9 to 3.13); BUNDLE_ARCH: x86_64 or aarch64.
BUNDLE_PYTHON ?= $(shell $(PYTHON) -c 'import sys; print("{}.{}".format(*sys.version_info[:2]))')
BUNDLE_ARCH   ?= $(shell uname -m)
bundle: install
	$(BIN)/python scripts/bundle.py --python $(BUNDLE_PYTHON) --platform $(BUNDLE_ARCH)

# The whole stack: mosquitto (mTLS, local CA under var/pki), edgemon-server run (collector, API,
# dashboard; SQLite var/edgemon.db) and an agent for this machine. Ctrl-C stops all three.
run: install dashboard
	@$(MAKE) --no-print-directory system-deps-run
	$(BIN)/python scripts/run_stack.py

system-deps-run:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; \
	    fi; \
	fi

# The store path under hostile input for longer than `make test` runs it.
fuzz: install
	EDGEMON_FUZZ_EXAMPLES=$${EDGEMON_FUZZ_EXAMPLES:-5000} $(BIN)/pytest -q tests/server/test_fuzz_ingest.py -p no:cacheprovider

bench: install
	$(BIN)/python benchmarks/agent_overhead.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/api.py
	$(BIN)/python benchmarks/storage.py
	$(BIN)/python benchmarks/sustained.py

clean:
	rm -rf $(VENV) $(VENV_OLD) var .pytest_cache .mypy_cache .ruff_cache .hypothesis frontend/node_modules server/src/edgemon_server/static
