"""Runnable examples of eventstore_async (``python -m examples.webapp``)."""
