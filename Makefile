# `make demo` and `make test` work on a fresh machine: the virtual environment is created when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint browser bench clean

$(BIN)/lanner: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/lanner
	$(BIN)/lanner demo

# Debian's Chromium for the report's browser tests (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

lint: $(BIN)/lanner
	$(BIN)/ruff check src tests benchmarks

# Two workers (a 2-core CI machine), whole test files each, so module fixtures are built once.
test: $(BIN)/lanner browser lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

clean:
	rm -rf $(VENV) runs .pytest_cache
