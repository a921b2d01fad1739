"""OpenTelemetry traces and metrics, when ``opentelemetry-api`` is installed (the ``otel``
extra); without it nothing here runs (the facade's wrappers are chosen at import).

Each store operation is a span ``eventstore.<operation>`` (``append``, ``load``,
``read``, ``head``, ``save_snapshot``, ``project``, ``execute``...) of kind CLIENT with:

- ``db.system.name`` = ``aws.dynamodb``, ``db.collection.name`` and
  ``aws.dynamodb.table_names``: the table;
- ``eventstore.aggregate_type``, ``eventstore.version`` (what the operation returned or
  was given), ``eventstore.attempts`` (transactions sent), ``eventstore.offloaded``,
  ``eventstore.read_capacity_units`` / ``eventstore.write_capacity_units`` (what
  DynamoDB reported);
- ``eventstore.aggregate_id`` only with ``StoreConfig(trace_aggregate_ids=True)``: ids are
  unbounded in number and may be personal data;
- on failure ``error.type`` (the exception's class), the exception as an event, and an
  ERROR status; a cancellation is not an error.

Metrics (meter ``eventstore_async``): ``eventstore.operation.duration`` (histogram, s;
``eventstore.operation``, ``eventstore.outcome`` = ok, conflict, error, cancelled),
``eventstore.conflicts``, ``eventstore.retries`` (transactions sent again),
``eventstore.offloads`` (counters), ``eventstore.subscription.lag`` (gauge, s, per
``eventstore.subscription``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ._capacity import Usage, current_usage, tracking

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed: no telemetry, no cost
    ENABLED = False
else:
    ENABLED = True

__all__ = ["ENABLED", "operation_span", "record_lag", "traced_iterator", "traced_method"]

_SCOPE = "eventstore_async"
_instruments: dict[str, Any] = {}


def _instrument(name: str) -> Any:
    """Instruments are made once, on the global meter provider (a proxy until one is set)."""
    if not _instruments:
        meter = _metrics.get_meter(_SCOPE)
        _instruments["duration"] = meter.create_histogram(
            "eventstore.operation.duration", unit="s", description="Store operations"
        )
        _instruments["conflicts"] = meter.create_counter(
            "eventstore.conflicts", description="Appends refused with ConcurrencyError"
        )
        _instruments["retries"] = meter.create_counter(
            "eventstore.retries", description="Transactions sent again after a refusal"
        )
        _instruments["offloads"] = meter.create_counter(
            "eventstore.offloads", description="Change sets and states streamed to S3"
        )
        _instruments["lag"] = meter.create_gauge(
            "eventstore.subscription.lag", unit="s", description="Commit to delivery"
        )
    return _instruments[name]


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if not isinstance(error, Exception):
        return "cancelled"
    return "conflict" if type(error).__name__ == "ConcurrencyError" else "error"


@contextmanager
def operation_span(
    operation: str, table: str, attributes: dict[str, Any], usage: Usage
) -> Iterator[dict[str, Any]]:
    """A span and the duration metric around one operation; the caller adds attributes
    it learns (from the result) to the dict yielded."""
    tracer = _trace.get_tracer(_SCOPE)
    base = {
        "db.system.name": "aws.dynamodb",
        "db.collection.name": table,
        "aws.dynamodb.table_names": (table,),
        **attributes,
    }
    learned: dict[str, Any] = {}
    started = time.perf_counter()
    span = tracer.start_span(f"eventstore.{operation}", kind=SpanKind.CLIENT, attributes=base)
    error: BaseException | None = None
    try:
        with _trace.use_span(span, end_on_exit=False, record_exception=False):
            yield learned
    except BaseException as exc:
        error = exc
        raise
    finally:
        _finish(span, operation, learned, usage, error, time.perf_counter() - started)


def _finish(
    span: Any,
    operation: str,
    learned: dict[str, Any],
    usage: Usage,
    error: BaseException | None,
    seconds: float,
) -> None:
    outcome = _outcome(error)
    learned["eventstore.attempts"] = usage.attempts
    learned["eventstore.offloaded"] = usage.offloads > 0
    learned["eventstore.read_capacity_units"] = usage.read
    learned["eventstore.write_capacity_units"] = usage.write
    span.set_attributes(learned)
    if error is not None and outcome != "cancelled":
        span.set_attribute("error.type", type(error).__qualname__)
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()
    labels = {"eventstore.operation": operation}
    _instrument("duration").record(seconds, {**labels, "eventstore.outcome": outcome})
    if outcome == "conflict":
        _instrument("conflicts").add(1, labels)
    if usage.attempts > 1:
        _instrument("retries").add(usage.attempts - 1, labels)
    if usage.offloads:
        _instrument("offloads").add(usage.offloads, labels)


def describe(learned: dict[str, Any], result: Any) -> None:
    """Version and aggregate type from what an operation returned."""
    head = getattr(result, "head", None)  # a history
    if head is not None:
        result = head
    version = getattr(result, "version", None)
    if isinstance(version, int):
        learned["eventstore.version"] = version
    kind = getattr(result, "aggregate_type", None)
    if isinstance(kind, str):
        learned["eventstore.aggregate_type"] = kind


def call_attributes(args: tuple[Any, ...], kwargs: dict[str, Any], ids: bool) -> dict[str, Any]:
    """What the call itself says: the aggregate type given, and (opt-in) the id."""
    attributes: dict[str, Any] = {}
    kind = kwargs.get("aggregate_type")
    if isinstance(kind, str):
        attributes["eventstore.aggregate_type"] = kind
    if ids and args and isinstance(args[0], str):
        attributes["eventstore.aggregate_id"] = args[0]
    return attributes


_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def traced_method(
    operation: str, settings_of: Callable[[Any], tuple[str, bool]]
) -> Callable[[_Method], _Method]:
    """Run the method inside the operation's span; without the otel extra, the method
    itself. ``settings_of(self)`` gives the table name and whether ids are traced."""

    def decorate(method: _Method) -> _Method:
        if not ENABLED:
            return method

        @functools.wraps(method)
        async def in_span(self: Any, *args: Any, **kwargs: Any) -> Any:
            table, ids = settings_of(self)
            usage = Usage(parent=current_usage())
            attributes = call_attributes(args, kwargs, ids)
            with tracking(usage), operation_span(operation, table, attributes, usage) as learned:
                result = await method(self, *args, **kwargs)
                describe(learned, result)
                return result

        return in_span  # type: ignore[return-value]

    return decorate


async def traced_iterator(
    operation: str, table: str, attributes: dict[str, Any], items: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """Yield ``items`` inside one span that lasts the iteration (``read()``). The span is
    not made current: the iteration may be resumed from other contexts."""
    usage = Usage()  # not tracked: the iteration's requests run in the caller's contexts
    tracer = _trace.get_tracer(_SCOPE)
    span = tracer.start_span(
        f"eventstore.{operation}",
        kind=SpanKind.CLIENT,
        attributes={"db.system.name": "aws.dynamodb", "db.collection.name": table, **attributes},
    )
    started = time.perf_counter()
    error: BaseException | None = None
    last: Any = None
    try:
        async for item in items:
            last = item
            yield item
    except BaseException as exc:
        error = exc
        raise
    finally:
        learned: dict[str, Any] = {}
        if last is not None:
            describe(learned, last)
        _finish(span, operation, learned, usage, error, time.perf_counter() - started)


def record_lag(subscription: str, seconds: float) -> None:
    """The subscription-lag gauge (a no-op without the otel extra)."""
    if ENABLED:
        _instrument("lag").set(seconds, {"eventstore.subscription": subscription})
