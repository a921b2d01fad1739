"""Closed-loop measurement: N workers run one operation back to back.

Client CPU per operation is ``time.process_time()`` over the segment divided by the
operations done: the whole client process (event loop, worker threads), nothing of the
server, which runs in another process on another core. A configuration's figure is the
median of its rounds.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio

__all__ = ["Segment", "Totals", "percentile", "process_cpu_s", "run_segment"]

_TICKS = os.sysconf("SC_CLK_TCK")

#: One operation; the argument is the worker's index (0..concurrency-1).
Operation = Callable[[int], Awaitable[object]]


@dataclass(slots=True)
class Segment:
    """What one closed-loop run of one variant measured."""

    ops: int = 0
    errors: int = 0
    cpu_s: float = 0.0
    server_cpu_s: float | None = None
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    first_error: str | None = None
    #: Requests the stub answered during the segment, per operation (stub only).
    requests: dict[str, int] | None = None


@dataclass(slots=True)
class Totals:
    """Segments of one (variant, workload, concurrency), added up across rounds."""

    segments: list[Segment] = field(default_factory=list)

    def add(self, segment: Segment) -> None:
        self.segments.append(segment)

    @property
    def ops(self) -> int:
        return sum(s.ops for s in self.segments)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.segments)

    @property
    def cpu_us_per_op(self) -> float:
        """The median round: robust to a round that met a noisy neighbour."""
        rounds = [x for x, s in zip(self.round_cpu_us_per_op, self.segments, strict=True) if s.ops]
        return statistics.median(rounds) if rounds else math.nan

    @property
    def mean_cpu_us_per_op(self) -> float:
        return 1e6 * sum(s.cpu_s for s in self.segments) / max(1, self.ops)

    @property
    def round_cpu_us_per_op(self) -> list[float]:
        return [1e6 * s.cpu_s / max(1, s.ops) for s in self.segments]

    @property
    def server_cpu_us_per_op(self) -> float | None:
        if any(s.server_cpu_s is None for s in self.segments):
            return None
        return 1e6 * sum(s.server_cpu_s or 0.0 for s in self.segments) / max(1, self.ops)

    @property
    def requests_per_op(self) -> dict[str, float] | None:
        """Requests the stub answered per operation done, by operation name (stub only)."""
        if not self.segments or any(s.requests is None for s in self.segments):
            return None
        totals: dict[str, int] = {}
        for segment in self.segments:
            for name, count in (segment.requests or {}).items():
                totals[name] = totals.get(name, 0) + count
        return {name: round(count / max(1, self.ops), 3) for name, count in totals.items()}

    @property
    def ops_per_s(self) -> float:
        wall = sum(s.wall_s for s in self.segments)
        return self.ops / wall if wall > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return 1e3 * percentile([x for s in self.segments for x in s.latencies_s], q)

    @property
    def first_error(self) -> str | None:
        return next((s.first_error for s in self.segments if s.first_error), None)


def process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system, all threads) another process has used so far."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (0 < q <= 1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def run_segment(
    operation: Operation,
    *,
    concurrency: int,
    seconds: float,
    max_ops: int | None = None,
    server_pid: int | None = None,
) -> Segment:
    """Run ``operation`` from ``concurrency`` workers until the time or the count is up.

    An operation that raises counts as an error (kept out of the latencies); the first
    error's text is kept for the report. With ``server_pid``, the server's CPU time over
    the segment is recorded too (a check that the stub is not the bottleneck).
    """
    segment = Segment()
    started = itertools.count()
    limit = math.inf if max_ops is None else max_ops
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        while next(started) < limit and time.perf_counter() < deadline:
            begin = time.perf_counter()
            try:
                await operation(index)
            except Exception as exc:
                segment.errors += 1
                segment.first_error = segment.first_error or f"{type(exc).__name__}: {exc}"
                continue
            segment.latencies_s.append(time.perf_counter() - begin)
            segment.ops += 1

    server = process_cpu_s(server_pid)
    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(concurrency):
            group.start_soon(worker, index)
    segment.cpu_s = time.process_time() - cpu
    segment.wall_s = time.perf_counter() - wall
    server_after = process_cpu_s(server_pid)
    if server is not None and server_after is not None:
        segment.server_cpu_s = server_after - server
    return segment
