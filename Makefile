# The two commands a new machine needs: `make demo` and `make test`.
# Both create .venv and install what they need; as root they also install the
# Debian packages the lab and the tests use (see scripts/system-deps.sh).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test setup system-deps lint bench clean mutate

demo: system-deps setup
	$(BIN)/fleet --project . demo

test: system-deps setup
	scripts/run-tests

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e './runtime[vision,mqtt]' -e '.[test,dev]'
	touch $@

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
