# Firefly: `make run` to try it, `make test` to test it.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

# Tests always use real PostgreSQL and Redis (started or installed if missing).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/firefly
TEST_BROKER_URL   ?= redis://127.0.0.1:6379/15

.PHONY: run test install lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	$(PY) manage.py collectstatic --noinput --verbosity 0
	exec bash scripts/run.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

test: install
	bash scripts/services.sh $(TEST_DATABASE_URL) $(TEST_BROKER_URL)
	bash scripts/browser.sh
	$(MAKE) --no-print-directory lint
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(VENV)/bin/pytest

bench: install
	$(PY) bench/engine.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
