# Everything builds its own virtualenv: a fresh clone with only Python works.
# One venv, two levels: `make demo` (and bench) install the package with its sandbox extra only;
# `make test` adds the test tools on top. Each level has its own stamp.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: test demo bench venv clean wheel-check lint test-lowest

# --no-compile: Python compiles what the demo imports when it imports it, not every installed module
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --no-compile -e '.[sandbox]'
	touch $(DEMO_STAMP)

$(TEST_STAMP): $(DEMO_STAMP) pyproject.toml
	$(PIP) -e '.[test]'
	touch $(TEST_STAMP)

venv: $(TEST_STAMP)

# Tests run in parallel, a file per worker (module fixtures are started once); more workers than
# cores, since many tests wait on subprocesses and sockets. COVERAGE=1 (CI: .ci/run) runs the same
# suite under coverage, every Python process counted (pyproject's [tool.coverage.run]), and prints
# the report; nothing fails on its figure.
JOBS ?= 4
# The suite starts hundreds of Python processes (the CLI, the sandbox, the benchmarks) and pytest
# rewrites every test module: with PYTHONDONTWRITEBYTECODE in the shell each of them compiles the
# package from source again (a subprocess-heavy test file took a fifth more CPU, each pytest worker
# 2.7 s more to collect); here they keep their bytecode (__pycache__ is ignored by git, not packaged).
test test-lowest: export PYTHONDONTWRITEBYTECODE :=
test: $(TEST_STAMP)
	$(if $(COVERAGE),rm -f .coverage .coverage.*)
	$(BIN)/python $(if $(COVERAGE),-m coverage run) -m pytest -q -n $(JOBS) --dist loadfile $(PYTEST_ARGS)
	$(if $(COVERAGE),$(BIN)/python -m coverage combine -q && $(BIN)/python -m coverage report)

# Static checks, configured in pyproject.toml: ruff (the rule set and 120 columns) and mypy (strict on
# the core). CI runs them before the tests.
lint: $(TEST_STAMP)
	$(BIN)/python -m ruff check src
	$(BIN)/python -m mypy

# The same suite on the lowest versions pyproject.toml allows (.ci/lowest-constraints.txt), in a
# virtualenv of its own: a floor that no longer holds fails CI, not a user.
LOWEST := .venv-lowest
$(LOWEST)/.installed: pyproject.toml .ci/lowest-constraints.txt
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --disable-pip-version-check -c .ci/lowest-constraints.txt -e '.[test]'
	touch $(LOWEST)/.installed

test-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/python -m pytest -q -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

demo: $(DEMO_STAMP)
	@if [ -t 0 ]; then $(BIN)/cs-posthog demo $(DEMO_FLAGS); else $(BIN)/cs-posthog demo --no-input $(DEMO_FLAGS); fi

# The built wheel in a fresh virtualenv, no extras, outside the checkout: --help, --version,
# completion and the demo, then the same with the sandbox extra (CI runs it after the tests).
wheel-check: $(DEMO_STAMP)
	BUILD_PYTHON=$(BIN)/python PYTHON=$(PYTHON) .ci/wheel-check

bench: $(DEMO_STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(LOWEST) build dist .pytest_cache .coverage .coverage.*
