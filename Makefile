# reviewscore: `make run` starts the service, `make test` runs every check. Both set up
# everything they need on a fresh machine (Python 3.11+ and a C compiler).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Where `make faults`, `make multihost` and `make chaos` write their tables as JSON (committed; the
# docs' faults report is rendered from them). Other targets write none, so `make test` leaves the
# checkout as it found it.
REPORTS ?= $(CURDIR)/bench/results/suites
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-fast docs docs-build bench-storage lint typecheck faults multihost chaos deploy-check compose-test bench bench-coordination venv browser test-tools clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[model,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

browser:
	@bash scripts/install-chromium.sh

# Debian packages some tests use (libfaketime, docker-compose, nginx, prometheus, kubectl,
# podman with runc and debootstrap),
# installed when missing.
test-tools:
	@bash scripts/install-test-tools.sh

run: $(STAMP)
	$(BIN)/reviewscore run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The chaos soak's seed in `make test` (3 minutes): fixed, so a red run is a regression and not a
# new draw (its first 3 minutes of faults are those of its 30-minute run in the docs); `make chaos`
# draws a new one. CHAOS_SEED=n overrides it.
TEST_CHAOS_SEED := 101

# Everything, with the slow suites in their short form (`-m "not long"`: the multi-host cases
# another case covers too); `make multihost` runs every case.
test: $(STAMP) browser test-tools lint typecheck
	CHAOS_SEED=$(or $(CHAOS_SEED),$(TEST_CHAOS_SEED)) $(BIN)/python -m pytest -m "not long" $(PYTEST_ARGS)

# The unit and integration tiers (tests/conftest.py TIERS: no stack of the service's own
# processes; real SQLite, PostgreSQL, Redis and web servers, a stub scorer where a model would
# be), for every change. `make test` still runs everything.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "unit or integration" $(PYTEST_ARGS)

# The docs site (mkdocs.yml, docs/): `make docs` serves it at http://127.0.0.1:8001 and rebuilds
# on every edit; `make docs-build` builds it into site/ with warnings as errors, as make test does
# (tests/test_docs.py). The reference and report pages are generated from the code at each build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs serve --strict -a 127.0.0.1:8001

docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict -d site

faults: $(STAMP)
	REVIEWSCORE_REPORTS_DIR=$(REPORTS) $(BIN)/python -m pytest tests/test_faults.py tests/test_resilience.py -s $(PYTEST_ARGS)

# deploy/: the Kubernetes manifests rendered by `kubectl kustomize` and validated offline against
# Kubernetes' and KEDA's schemas, the alerting rules through promtool and a real Prometheus.
deploy-check: $(STAMP) test-tools
	$(BIN)/python -m pytest tests/test_deploy.py $(PYTEST_ARGS)

# Several hosts as network namespaces on this machine (needs root, as CI runs): prints the table.
multihost: $(STAMP) test-tools
	REVIEWSCORE_REPORTS_DIR=$(REPORTS) $(BIN)/python -m pytest tests/multihost -s $(PYTEST_ARGS)

# docker-compose.yml run for real with podman (needs root): the image built from the Dockerfile on
# a locally made Debian base, the stack up, a file scored while a worker restarts, the stack down.
compose-test: $(STAMP) test-tools
	$(BIN)/python -m pytest tests/test_compose_podman.py -s $(PYTEST_ARGS)
# A chaos soak on the multi-host suite's hosts: a workload under faults drawn from SEED (random
# when left out, printed), then the history checker; the history stays in var/chaos/.
chaos: $(STAMP) test-tools
	REVIEWSCORE_REPORTS_DIR=$(REPORTS) $(BIN)/python -m tests.chaos $(if $(SEED),--seed $(SEED)) --minutes $(or $(MINUTES),3) $(PYTEST_ARGS)

# Installs wrk (Debian) first: the singles rows are measured with it. BENCH_ARGS=--quick: minutes.
bench: $(STAMP)
	@bash scripts/install-wrk.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

# The coordination path alone (claim, write, count) on PostgreSQL, 1 to 8 worker processes; also
# the last row of `make bench`.
bench-coordination: $(STAMP)
	$(BIN)/python -m bench.coordination $(BENCH_ARGS)

# Database bytes per finished row on SQLite and PostgreSQL (texts dropped vs kept).
bench-storage: $(STAMP)
	$(BIN)/python -m bench.storage $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
