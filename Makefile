# Serai: the two commands a new user needs are `make demo` and `make test`.
# Everything else here is what they are built from.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow setup proto proto-check lint typecheck check clean bench-pki bench-registry bench-gateway bench-messagelog

demo: setup
	$(PY) -m serai.cli demo

test: setup
	$(PY) -m pytest

# The cases marked slow (full-scale versions of tests whose short versions run in `make test`).
test-slow: setup
	$(PY) -m pytest -m slow

setup: $(STAMP)

# The virtual environment is rebuilt whenever the pinned set or the project metadata changes.
$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Serai needs Python 3.11 or newer"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -c requirements/lock.txt -e '.[dev]'
	touch $(STAMP)

# Regenerate serai_proto/ from proto/. The output is committed; tests/test_proto_fresh.py fails when it is stale.
proto: setup
	$(PY) tools/genproto.py

proto-check: setup
	$(PY) tools/genproto.py --check

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy serai certs gateway registry adapters tools tests

check: lint typecheck test

# OCSP responder and TSA throughput: each runs as its own process, loaded by a concurrent client.
bench-pki: setup
	$(PY) tools/bench_ocsp.py --concurrency 32 --duration 10
	$(PY) tools/bench_tsa.py --concurrency 32 --duration 10

# Global configuration: generating and signing one for 1,000 members, and a gateway's lookups.
bench-registry: setup
	$(PY) tools/bench_globalconf_generate.py
	$(PY) tools/bench_globalconf_lookups.py

# Calls/s, latency and CPU per call through two gateway processes, against direct calls to
# the echo provider and, when nginx is installed, a pair of nginx doing mutual TLS only
# (docs/performance.md). Options: `serai bench --help`.
BENCH_NGINX = $(shell command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx && echo --nginx)
bench-gateway: setup
	$(PY) -m serai.cli bench $(BENCH_NGINX)

bench-messagelog: setup
	$(PY) tools/bench_merkle.py
	$(PY) tools/bench_msglog.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
