# Firefly: `make run` to try it, `make test` to test it.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

# Tests always use real PostgreSQL and Redis (started or installed if missing).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/firefly
TEST_BROKER_URL   ?= redis://127.0.0.1:6379/15
# The tests with real workers run a second time on RabbitMQ.
TEST_AMQP_URL     ?= amqp://guest:guest@127.0.0.1:5672//

.PHONY: run serve test install lint deploy-check bench clean

$(STAMP): pyproject.toml
	@echo "Installing Firefly and its dependencies into $(VENV) (a minute or two the first time)..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo runs in debug (development keys, plain HTTP) unless DEBUG says otherwise.
run: export DEBUG ?= true
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	$(PY) manage.py collectstatic --noinput --verbosity 0
	exec bash scripts/run.sh

# Production: gunicorn, static files by WhiteNoise, DEBUG off whatever the environment
# says (the keys README lists are required), and the same workers and beat as `make run`.
serve: export DEBUG = false
serve: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	exec env WEB=gunicorn bash scripts/run.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

test: install
	bash scripts/services.sh $(TEST_DATABASE_URL) $(TEST_BROKER_URL) $(TEST_AMQP_URL)
	bash scripts/browser.sh
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory deploy-check
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(VENV)/bin/pytest
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_AMQP_URL) \
	  $(VENV)/bin/pytest -m worker --ignore=tests/e2e

# Django's deployment checks, with the production environment README documents (and
# nothing else from this shell): DEBUG unset, keys of our own, real hosts. Any warning fails.
deploy-check: install
	env -i PATH="$$PATH" HOME="$$HOME" \
	  SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  FIREFLY_AUDIT_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  FIREFLY_SECRETS_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  ALLOWED_HOSTS=firefly.example.com DATABASE_URL=$(TEST_DATABASE_URL) \
	  CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) manage.py check --deploy --fail-level WARNING

bench: install
	$(PY) bench/engine.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
