"""OpenTelemetry spans and metrics, seen through the SDK's in-memory exporter and reader;
without the otel extra, nothing is wrapped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from eventstore_async import ConcurrencyError

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def providers() -> None:
    """The SDK, installed once per process (OpenTelemetry's globals are set once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def points(name: str) -> list[Any]:
    data = _READER.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


async def test_an_append_span_has_the_attributes(
    make_store: StoreFactory, spans: InMemorySpanExporter
) -> None:
    store = await make_store()
    await store.append("order-1", [{"n": 1}], expected_version=0, aggregate_type="Order")
    (span,) = named(spans, "eventstore.append")
    attributes = dict(span.attributes or {})
    assert span.kind is SpanKind.CLIENT
    assert attributes["db.system.name"] == "aws.dynamodb"
    assert attributes["db.collection.name"] == store.config.table_name
    assert attributes["aws.dynamodb.table_names"] == (store.config.table_name,)
    assert attributes["eventstore.aggregate_type"] == "Order"
    assert attributes["eventstore.version"] == 1
    assert attributes["eventstore.attempts"] == 1
    assert attributes["eventstore.offloaded"] is False
    assert "eventstore.aggregate_id" not in attributes  # only when asked for
    assert span.status.status_code is StatusCode.UNSET


async def test_a_conflict_is_an_error_span_and_counted(
    make_store: StoreFactory, spans: InMemorySpanExporter
) -> None:
    store = await make_store()
    await store.append("order-1", [{"n": 1}], expected_version=0)
    before = sum(p.value for p in points("eventstore.conflicts"))
    with pytest.raises(ConcurrencyError):
        await store.append("order-1", [{"n": 2}], expected_version=0)
    failed = named(spans, "eventstore.append")[-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "ConcurrencyError"
    assert [event.name for event in failed.events] == ["exception"]
    assert sum(p.value for p in points("eventstore.conflicts")) == before + 1
    outcomes = {
        p.attributes["eventstore.outcome"]
        for p in points("eventstore.operation.duration")
        if p.attributes["eventstore.operation"] == "append"
    }
    assert {"ok", "conflict"} <= outcomes


async def test_aggregate_ids_only_when_asked_for(
    make_store: StoreFactory, spans: InMemorySpanExporter
) -> None:
    store = await make_store(trace_aggregate_ids=True)
    await store.append("order-1", [{"n": 1}], expected_version=0)
    await store.load("order-1")
    for name in ("eventstore.append", "eventstore.load"):
        (span,) = named(spans, name)
        assert dict(span.attributes or {})["eventstore.aggregate_id"] == "order-1"


async def test_reads_snapshots_and_offloads_have_spans(
    make_store: StoreFactory, spans: InMemorySpanExporter
) -> None:
    store = await make_store(offload_threshold_bytes=1024)
    before = sum(p.value for p in points("eventstore.offloads"))
    await store.append("order-1", [{"blob": "x" * 4096}], expected_version=0)
    await store.append("order-1", [{"n": 2}], expected_version=1)
    await store.load("order-1")
    assert (await store.head("order-1")) is not None
    assert [cs.version async for cs in store.read("order-1")] == [1, 2]
    await store.save_snapshot("order-1", 2, {"n": 2})
    offloaded, inline = named(spans, "eventstore.append")
    assert dict(offloaded.attributes or {})["eventstore.offloaded"] is True
    assert dict(inline.attributes or {})["eventstore.offloaded"] is False
    assert sum(p.value for p in points("eventstore.offloads")) == before + 1
    for name, version in [("load", 2), ("head", 2), ("read", 2), ("save_snapshot", 2)]:
        (span,) = named(spans, f"eventstore.{name}")
        assert dict(span.attributes or {})["eventstore.version"] == version, name


async def test_project_has_a_span_and_the_lag_a_gauge(
    make_store: StoreFactory, spans: InMemorySpanExporter
) -> None:
    store = await make_store(feed_shards=1)
    await store.append("order-1", [{"n": 1}], expected_version=0)
    async with store.subscribe("orders-view") as subscription:
        async for change_set in subscription:
            await subscription.project("orders", put={change_set.aggregate_id: {"n": 1}})
            break
    (span,) = named(spans, "eventstore.project")
    assert dict(span.attributes or {})["eventstore.attempts"] >= 1
    lags = [p for p in points("eventstore.subscription.lag")]
    assert any(p.attributes["eventstore.subscription"] == "orders-view" for p in lags)


def test_without_the_otel_extra_nothing_is_wrapped() -> None:
    """``opentelemetry`` made unimportable, as when the extra is not installed."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from eventstore_async import _telemetry, EventStore\n"
        "assert not _telemetry.ENABLED\n"
        "f = lambda self: None\n"
        "assert _telemetry.traced_method('x', None)(f) is f\n"
        "assert EventStore.append.__wrapped__.__name__ == 'append'\n"
        "assert 'opentelemetry' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


async def test_execute_has_a_span(make_store: StoreFactory, spans: InMemorySpanExporter) -> None:
    from examples.bank import EVENT_TYPES, account_decider, open_account

    store = await make_store(types=EVENT_TYPES)
    await store.repository(account_decider()).execute("a", open_account("a"))
    (execute,) = named(spans, "eventstore.execute")
    attributes = dict(execute.attributes or {})
    assert attributes["eventstore.attempts"] == 1
    assert attributes["db.collection.name"] == store.config.table_name
