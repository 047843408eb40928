# tasklens: the two commands are `make run` and `make test`; both set up .venv when needed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup system-deps run test test-unit test-compat lock-compat dist bench lint lock clean

setup:
	@scripts/bootstrap.sh

system-deps:
	@scripts/system-deps.sh

## make run: Airflow standalone on 127.0.0.1:8080 with tasklens, the lakehouse DAGs and a local SMTP sink.
run: setup
	@$(PY) scripts/run.py

## make test: the whole suite; exits non-zero on any failure.
test: setup system-deps
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest tests/unit tests/dags $(PYTEST_ARGS)

## make dist: the wheel and sdist in dist/ (built with the locked setuptools from .venv, so offline and repeatable).
dist: setup
	@rm -rf dist build
	@$(PY) -m build --no-isolation --outdir dist .
	@rm -rf build

## make test-compat: the compatibility suite on Airflow 3.1 and 3.2, a venv each from compat/ locks (3.3 is make test).
test-compat: setup
	@PYTEST_ARGS="$(PYTEST_ARGS)" compat/run.sh

## make lock-compat: refresh compat/constraints-<minor>.txt from fresh venvs after changing compat/requirements-*.txt.
lock-compat: setup
	@compat/lock.sh

## make bench: every benchmark, each printing one `name: value` line.
bench: setup
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

lint: setup
	@$(VENV)/bin/ruff check plugins dags include tests benchmarks scripts compat
	@$(VENV)/bin/mypy plugins/tasklens
	@PYTHONPATH=plugins $(VENV)/bin/lint-imports

## make lock: refresh constraints.txt from the current .venv after changing requirements*.txt.
lock:
	@(echo "# Locked from a working venv with: pip freeze --all (make lock). Install with: pip install -c constraints.txt -r requirements-dev.txt"; \
	  $(VENV)/bin/pip freeze --all | grep -v '^-e\|^tasklens\|^pip==') > constraints.txt

clean:
	rm -rf .airflow .pytest_cache .mypy_cache .ruff_cache dist build
