# The front door. `make test` and `make run` work on a fresh clone with Python >= 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PKGS   := edgemon-core plugins/edgemon-cpu plugins/edgemon-disk plugins/edgemon-gpu-nvml
PYPROJECTS := $(foreach p,$(PKGS),$(p)/pyproject.toml) tests/plugins/edgemon-example/pyproject.toml

.PHONY: install lint typecheck pytest test run bench clean system-deps

$(STAMP): $(PYPROJECTS) requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e 'edgemon-core[test]' $(foreach p,$(filter-out edgemon-core,$(PKGS)),-e $(p)) -r requirements-dev.txt
	# A real third-party plugin, installed the way users install one (not editable).
	$(BIN)/python -m pip install -q --force-reinstall --no-deps ./tests/plugins/edgemon-example
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The transport tests start their own mosquitto (a real broker with mutual TLS).
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; \
	    else \
	        echo "mosquitto is needed by the tests: sudo apt-get install mosquitto (or your OS's package)"; exit 1; \
	    fi; \
	fi

pytest: install system-deps
	$(BIN)/pytest

test: lint typecheck pytest

# Until the server and dashboard land: the agent in print mode, one payload a line.
run: install
	EDGEMON_STATE_DIR=$${EDGEMON_STATE_DIR:-var/agent} $(BIN)/edgemon-agent run --interval $${EDGEMON_INTERVAL:-10} --output stdout

bench: install
	$(BIN)/python benchmarks/agent_overhead.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
