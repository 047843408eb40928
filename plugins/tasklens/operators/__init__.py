"""Operators that carry tasklens monitoring (Spark jobs, data quality, explicit alerts).

Import them from their modules (:mod:`tasklens.operators.spark`, :mod:`tasklens.operators.quality`): the package
itself exports nothing, so importing it loads no operator."""

__all__: list[str] = []
