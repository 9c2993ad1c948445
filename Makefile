# fedcrm — one command to set up and run each thing, from a fresh clone.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedcrm-installed
DEMO_OUT ?= runs/demo

export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: setup demo test lint bench clean browser

setup: $(STAMP)

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (fedcrm needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU build of 2.13.0 is on this kind of machine; any other
# version would pull a multi-GB CUDA build. The project's range admits 2.13.0.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/fedcrm demo --out $(DEMO_OUT) --config configs/demo.toml --fresh

test: setup browser
	$(PY) -m pytest

# Headless Chromium from Debian's packages, for the compliance report's browser test
# (tests/test_report.py). Installed only when missing; where it cannot be installed (no apt-get,
# not root and no passwordless sudo, no network) this says so and the test skips.
CHROMIUM := /usr/bin/chromium

browser:
	@if [ -x $(CHROMIUM) ]; then \
	  echo "browser: $(CHROMIUM) is installed"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: no apt-get here, chromium cannot be installed; the headless-browser test will be skipped"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "browser: not root and no passwordless sudo, chromium cannot be installed; the headless-browser test will be skipped"; exit 0; fi; \
	  echo "browser: installing Debian's chromium with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { $$SUDO apt-get install -y --no-install-recommends chromium \
	    || { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium; }; } \
	    || echo "browser: installing chromium failed; the headless-browser test will be skipped"; \
	fi

lint: setup
	$(VENV)/bin/ruff check fedcrm tests benchmarks
	$(VENV)/bin/ruff format --check fedcrm tests benchmarks

bench: setup
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache
