"""Operators that carry tasklens monitoring (Spark jobs, data quality, explicit alerts)."""
