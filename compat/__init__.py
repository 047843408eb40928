"""tasklens outside its own repository: built wheels, fresh venvs per Airflow version, ``airflow standalone``.

Used by the adoption and upgrade tests, ``benchmarks/adoption.py`` and ``make test-compat``. The locks of the
compatibility venvs live next to this file (``requirements-<minor>.txt`` + ``constraints-<minor>.txt``); Airflow 3.3
uses the project's own ``constraints.txt``.
"""
