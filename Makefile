# The two commands a new machine needs: `make demo` and `make test`.
# Both create .venv and install what they need; as root they also install the
# Debian packages the lab and the tests use (see scripts/system-deps.sh).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test test-fast setup system-deps lint bench clean mutate

demo: system-deps setup
	$(BIN)/fleet --project . demo

test: system-deps setup
	scripts/run-tests

# The edit-run loop: no labs, brokers, clouds or models (tests/areas.py marks those
# `servers`). `make test` stays the test of record. Our -m replaces pyproject's
# `-m "not crash_full"`, so it repeats it: else the 50-kill crash marathon runs here.
test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not servers and not crash_full"

setup: $(VENV)/.installed

# PYTHONWARNINGS: setuptools' deprecation boxes say nothing a user can act on here.
$(VENV)/.installed: pyproject.toml runtime/pyproject.toml
	@echo "setup: creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@echo "setup: upgrading pip"
	@$(BIN)/pip install -q --upgrade pip
	@echo "setup: installing edgefleet-runtime (agent, ONNX Runtime, OpenCV, PyAV, MQTT) and"
	@echo "       edgefleet (controller, test and lint tools); this takes a few minutes"
	@PYTHONWARNINGS=ignore $(BIN)/pip install -q -e './runtime[vision,mqtt]' -e '.[test,dev]'
	@touch $@
	@echo "setup: done; . $(BIN)/activate to use fleet and fleet-runtime"

system-deps:
	scripts/system-deps.sh

lint: setup
	$(BIN)/ruff check fleet runtime/fleet_runtime tests bench

# Mutation testing of the guard modules (scripts/mutate.py; not part of `make test`:
# it takes tens of minutes). Results: .mutate/report.txt; docs/promises.md explains survivors.
mutate: setup
	$(BIN)/python scripts/mutate.py $(TARGETS)

clean:
	rm -rf $(VENV) .fleet inventories/lab
