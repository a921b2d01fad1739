"""The two phases of a run: the closed-loop matrix and the open-loop sweep.

Variants run interleaved: for each configuration (workload x concurrency) every variant
gets a warm-up, then the measured rounds alternate between the variants, in a rotated
order each round, so that a noisy neighbour or a slow phase of the machine lands on all
of them alike.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from .measure import Operation, Totals, run_segment
from .openloop import RatePoint, noop, run_rate
from .targets import Target
from .variants import COMMAND_REFERENCE, Variant, open_variant
from .workloads import (
    APPEND_EVENT_BYTES,
    HISTORY_LENGTH,
    LOAD_AGGREGATE_ID,
    history_events,
    make_event,
)

__all__ = ["MatrixOptions", "SweepOptions", "run_matrix", "run_sweep"]


@dataclass(frozen=True, slots=True)
class MatrixOptions:
    run_id: str
    variants: Sequence[str]
    workloads: Sequence[str]
    concurrencies: Sequence[int]
    rounds: int
    seconds: float
    max_ops: int | None
    warmup_seconds: float
    warmup_ops: int | None


@dataclass(frozen=True, slots=True)
class SweepOptions:
    run_id: str
    variants: Sequence[str]
    rates: Sequence[float]
    seconds: float
    workers: int
    reference: bool


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rotated(names: Sequence[str], by: int) -> list[str]:
    shift = by % len(names)
    return [*names[shift:], *names[:shift]]


def make_operation(workload: str, variant: Variant, prefix: str, load_id: str) -> Operation:
    """The operation one worker repeats. Appends: each worker owns an aggregate and
    knows its version (the stub accepts any version; a real table needs the right one)."""
    if workload == "load":

        async def load(worker: int) -> None:
            history = await variant.load(load_id)
            if len(history.change_sets) != HISTORY_LENGTH:
                raise RuntimeError(f"loaded {len(history.change_sets)} change sets")

        return load

    event = make_event(0, APPEND_EVENT_BYTES)
    command = getattr(variant, "command", None) if workload == "command" else None
    if command is not None:

        async def execute(worker: int) -> None:
            # The same accounts in every round, so each stays cached after its first load.
            await command(f"{load_id}-account-{worker}", event)

        return execute
    any_version = workload == "append_any"
    versions: dict[int, int] = {}

    async def append(worker: int) -> None:
        version = versions.get(worker, 0)
        await variant.append(f"{prefix}-{worker}", event, None if any_version else version)
        versions[worker] = version + 1

    return append


async def seed_history(variant: Variant, aggregate_id: str) -> None:
    """Write the load workload's history (the stub has it canned already)."""
    for version, event in enumerate(history_events()):
        await variant.append(aggregate_id, event, version)


def _difference(
    before: dict[str, int] | None, after: dict[str, int] | None
) -> dict[str, int] | None:
    """Requests per operation name sent between two counts of the stub's."""
    if before is None or after is None:
        return None
    return {name: n - before.get(name, 0) for name, n in after.items() if n - before.get(name, 0)}


def _total(per_operation: dict[str, float] | None) -> float | None:
    return None if per_operation is None else round(sum(per_operation.values()), 3)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _row(workload: str, concurrency: int, variant: str, totals: Totals) -> dict[str, Any]:
    return {
        "workload": workload,
        "concurrency": concurrency,
        "variant": variant,
        "ops": totals.ops,
        "errors": totals.errors,
        "cpu_us_per_op": round(totals.cpu_us_per_op, 1),
        "mean_cpu_us_per_op": round(totals.mean_cpu_us_per_op, 1),
        "round_cpu_us_per_op": [round(x, 1) for x in totals.round_cpu_us_per_op],
        "server_cpu_us_per_op": _rounded(totals.server_cpu_us_per_op),
        "requests_per_op": totals.requests_per_op,
        "requests_total_per_op": _total(totals.requests_per_op),
        "ops_per_s": round(totals.ops_per_s, 1),
        "p50_ms": round(totals.latency_ms(0.50), 3),
        "p95_ms": round(totals.latency_ms(0.95), 3),
        "p99_ms": round(totals.latency_ms(0.99), 3),
        "first_error": totals.first_error,
    }


async def run_matrix(target: Target, options: MatrixOptions) -> list[dict[str, Any]]:
    """Every (workload, concurrency) configuration; one result row per variant."""
    rows: list[dict[str, Any]] = []
    configs = [(w, c) for w in options.workloads for c in options.concurrencies]
    for number, (workload, concurrency) in enumerate(configs, start=1):
        started = time.perf_counter()
        totals = await _run_config(target, options, workload, concurrency)
        new = [_row(workload, concurrency, name, total) for name, total in totals.items()]
        rows += new
        summary = " | ".join(
            f"{r['variant']} {r['cpu_us_per_op']:,.0f} us/op {r['ops_per_s']:,.0f} ops/s"
            + (f" ({r['errors']} errors)" if r["errors"] else "")
            for r in new
        )
        progress(
            f"[{number}/{len(configs)}] {workload} c={concurrency}: {summary}"
            f" ({time.perf_counter() - started:.1f} s)"
        )
    return rows


async def _run_config(
    target: Target, options: MatrixOptions, workload: str, concurrency: int
) -> dict[str, Totals]:
    label = f"{options.run_id}-{workload}-c{concurrency}"
    table = target.table_name(label)
    await target.prepare_table(table)
    load_id = f"{LOAD_AGGREGATE_ID}-{label}"
    names = list(options.variants)
    if workload == "command" and "eventstore_async" in names:
        names.append(COMMAND_REFERENCE)  # our bare append, in the same rounds
    async with AsyncExitStack() as stack:
        variants = {
            name: await stack.enter_async_context(
                open_variant(name, target.endpoint, table, concurrency)
            )
            for name in names
        }
        if workload == "load" and target.name != "stub":
            await seed_history(variants[options.variants[-1]], load_id)
        for index, name in enumerate(names):
            operation = make_operation(workload, variants[name], f"{label}-{index}-w", load_id)
            await run_segment(
                operation,
                concurrency=concurrency,
                seconds=options.warmup_seconds,
                max_ops=options.warmup_ops,
            )
        totals = {name: Totals() for name in names}
        for round_ in range(options.rounds):
            for name in rotated(names, round_):
                index = names.index(name)
                prefix = f"{label}-{index}-{round_}"
                before = await target.request_counts()
                segment = await run_segment(
                    make_operation(workload, variants[name], prefix, load_id),
                    concurrency=concurrency,
                    seconds=options.seconds,
                    max_ops=options.max_ops,
                    server_pid=target.server_pid,
                )
                segment.requests = _difference(before, await target.request_counts())
                totals[name].add(segment)
    return totals


async def run_sweep(target: Target, options: SweepOptions) -> list[dict[str, Any]]:
    """Explicit-version appends at each offered rate, every variant, interleaved."""
    points: list[RatePoint] = []
    table = target.table_name(f"{options.run_id}-sweep")
    await target.prepare_table(table)
    async with AsyncExitStack() as stack:
        variants = {
            name: await stack.enter_async_context(
                open_variant(name, target.endpoint, table, options.workers)
            )
            for name in options.variants
        }
        for index, name in enumerate(options.variants):  # warm-up: connections, caches
            warmup = make_operation("append", variants[name], f"sweep-{index}-w", "")
            await run_segment(warmup, concurrency=8, seconds=0.3)
        for step, rate in enumerate(options.rates):
            started = time.perf_counter()
            mine: list[RatePoint] = []
            for name in rotated(options.variants, step):
                index = options.variants.index(name)
                operation = make_operation("append", variants[name], f"sweep-{index}-{step}", "")
                mine.append(
                    await run_rate(
                        name, operation, rate=rate, seconds=options.seconds, workers=options.workers
                    )
                )
            if options.reference:
                mine.append(
                    await run_rate("no-op", noop, rate=rate, seconds=min(1.0, options.seconds))
                )
            points += mine
            summary = " | ".join(
                f"{p.variant} p99 {p.latency_ms(0.99):,.1f} ms ({p.achieved_per_s:,.0f}/s"
                + (f", {p.unfinished} unfinished)" if p.unfinished else ")")
                for p in mine
            )
            progress(
                f"[sweep {step + 1}/{len(options.rates)}] {rate:g} appends/s offered: {summary}"
                f" ({time.perf_counter() - started:.1f} s)"
            )
    return [p.summary() for p in points]
