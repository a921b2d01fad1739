"""Benchmarks for eventstore_async: ``python -m benchmarks.bench --help``."""
