# reviewscore: `make run` starts the service, `make test` runs every check. Both set up
# everything they need on a fresh machine (Python 3.11+ and a C compiler).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck faults bench venv browser clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[model,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

browser:
	@bash scripts/install-chromium.sh

run: $(STAMP)
	$(BIN)/reviewscore run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) browser lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

faults: $(STAMP)
	$(BIN)/python -m pytest tests/test_faults.py tests/test_resilience.py -s $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
