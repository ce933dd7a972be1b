# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BASE_STAMP := $(VENV)/.installed-base
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint docs pytest peers fuzz reliability env clean

# uv (from the package registry) installs the stack in seconds; plain pip is the fallback.
define install
	@if $(PYTHON) -m pip install -q uv >/dev/null 2>&1 && $(PYTHON) -m uv --version >/dev/null 2>&1; then \
		[ -x $(PY) ] || $(PYTHON) -m uv venv -q --python $(PYTHON) $(VENV); \
		$(PYTHON) -m uv pip install -q --compile-bytecode --python $(PY) -e "$(1)"; \
	else \
		[ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
		$(PY) -m pip install -q -e "$(1)"; \
	fi
endef

$(BASE_STAMP): pyproject.toml setup.py
	$(call install,.)
	@touch $@

$(TEST_STAMP): pyproject.toml setup.py
	$(call install,.[test])
	@touch $@ $(BASE_STAMP)

env: $(BASE_STAMP)

demo: $(BASE_STAMP)
	$(VENV)/bin/bas demo

lint: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

docs: $(TEST_STAMP)
	$(PY) -m sphinx -q -W --keep-going -b html docs docs/_build/html

# The peer suites (tests/test_peer_streams.py) need bluesky-tiled-plugins' own tests and example
# documents: its wheel has none, its sdist has them. Fetched once per installed version (with the
# pip of $(PYTHON), else the environment's), unpacked into $(VENV)/peers/.
PEERS := $(VENV)/peers
peers: $(TEST_STAMP)
	@version=$$($(PY) -c 'from importlib.metadata import version; print(version("bluesky-tiled-plugins"))') && \
	target=$(PEERS)/bluesky_tiled_plugins-$$version && \
	if [ ! -d "$$target/tests/examples" ]; then \
		echo "fetching bluesky-tiled-plugins $$version (sdist: its tests) into $(PEERS)"; \
		pip="$(PYTHON) -m pip"; $$pip --version >/dev/null 2>&1 || pip="$(PY) -m pip"; \
		tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$$pip download -q --no-deps --no-binary :all: -d "$$tmp" "bluesky-tiled-plugins==$$version" && \
		mkdir -p $(PEERS) && tar -xzf "$$tmp"/*.tar.gz -C $(PEERS) && \
		test -d "$$target/tests/examples"; \
	fi

# Every temporary file (pytest's, tiled's, ophyd.sim's) goes into one directory removed afterwards;
# what the tests keep (test-results/: the lineage page's screenshot) is outside it, kept.
pytest: $(TEST_STAMP) peers
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && TMPDIR=$$tmp $(PY) -m pytest

test: lint docs pytest

# New fuzz cases (random seeds, ten times as many as `make test` tries): a failure prints the
# case and how to reproduce it.
fuzz: $(TEST_STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && TMPDIR=$$tmp BAS_FUZZ_SCALE=$${BAS_FUZZ_SCALE:-10} \
		$(PY) -m pytest -q tests/test_fuzz.py --hypothesis-profile=explore -p no:cacheprovider

# RELIABILITY.md from the reliability tests' own figures (needs PostgreSQL, as the tests do).
RELIABILITY_TESTS := tests/test_fsck.py tests/test_idempotent.py tests/test_spool.py \
	tests/test_fuzz.py tests/test_access.py tests/test_provenance_rule.py tests/test_containment.py \
	tests/test_peer_streams.py tests/test_robustness.py
reliability: $(TEST_STAMP) peers
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && TMPDIR=$$tmp $(PY) -m pytest -q \
		$(RELIABILITY_TESTS) --reliability-report RELIABILITY.md

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .mypy_cache .ruff_cache .hypothesis
