"""Fault injection for eventstore_async: a fault proxy, a chaos run and its checker.

- :mod:`tests.chaos.proxy`: an HTTP/1.1 reverse proxy between the client and the
  emulator that injects seeded faults (resets, delays, 5xx, throttling, transaction
  conflicts, truncated bodies).
- :mod:`tests.chaos.writer`: one writer process of the chaos run (public API only).
- :mod:`tests.chaos.checker`: reads the table and bucket directly with plain boto3 and
  lists every violated invariant.
- :mod:`tests.chaos.run`: starts the emulator and the proxy, runs the writers, checks,
  prints the figures (``make chaos``).
"""
