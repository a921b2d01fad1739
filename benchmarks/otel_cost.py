"""``make bench``'s harness with OpenTelemetry absent, or with tracing on to a no-op
exporter, to measure what telemetry costs an append and a load.

``python benchmarks/otel_cost.py absent|tracing [bench options]`` runs
``benchmarks.bench`` from the current directory's checkout (so a worktree at an older
commit can be measured with the same script):

- ``absent``: ``opentelemetry`` cannot be imported, as without the ``otel`` extra;
- ``tracing``: the SDK's ``TracerProvider`` with a ``BatchSpanProcessor`` feeding an
  exporter that drops every span, and a ``MeterProvider`` whose reader is never
  collected: what a traced application pays in the client, minus the export itself.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from typing import Any


def _absent() -> None:
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]


def _tracing() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def main() -> None:
    mode, *bench_args = sys.argv[1:]
    {"absent": _absent, "tracing": _tracing}[mode]()
    sys.path.insert(0, os.getcwd())  # the checkout to measure
    sys.argv = ["benchmarks.bench", *bench_args]
    runpy.run_module("benchmarks.bench", run_name="__main__")


if __name__ == "__main__":
    main()
