"""Open-loop measurement: operations arrive on a fixed schedule, whatever the client does.

Operation ``i`` is due at ``start + i / rate``. A pool of workers takes the operations
in order, sleeps until each is due and runs it. Latency is measured from the *scheduled*
time, so when the client falls behind, the waiting counts (no coordinated omission):
past its capacity the latencies grow with the backlog instead of the load quietly
dropping. Timer wake-ups on Linux are rounded up to the millisecond, so every latency
here may include up to ~1 ms of the harness's own timer slack (the ``no-op`` reference
line of the sweep shows that floor).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import anyio

from .measure import Operation, percentile

__all__ = ["RatePoint", "noop", "run_rate"]

#: Most operations in flight at once; past that, arrivals queue (and the queueing counts).
DEFAULT_WORKERS = 64


@dataclass(slots=True)
class RatePoint:
    """What one variant did at one offered rate."""

    variant: str
    offered_per_s: float
    scheduled: int = 0
    completed: int = 0
    errors: int = 0
    unfinished: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def achieved_per_s(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return 1e3 * percentile(self.latencies_s, q)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "variant": self.variant,
            "offered_per_s": self.offered_per_s,
            "achieved_per_s": round(self.achieved_per_s, 1),
            "scheduled": self.scheduled,
            "completed": self.completed,
            "errors": self.errors,
            "unfinished": self.unfinished,
            "cpu_us_per_op": round(1e6 * self.cpu_s / max(1, self.completed), 1),
            "p50_ms": round(self.latency_ms(0.50), 3),
            "p95_ms": round(self.latency_ms(0.95), 3),
            "p99_ms": round(self.latency_ms(0.99), 3),
        }


async def noop(worker: int) -> None:
    """The reference operation: measures the harness alone (timers, task switches)."""


async def run_rate(
    variant: str,
    operation: Operation,
    *,
    rate: float,
    seconds: float,
    workers: int = DEFAULT_WORKERS,
    drain_s: float = 1.0,
) -> RatePoint:
    """Offer ``rate`` operations per second for ``seconds``, then wait ``drain_s`` at most.

    Operations not done by then (the backlog of a client that could not keep up) are
    cancelled and counted as unfinished; their latency so far, a lower bound, still
    counts in the percentiles, so a saturated client is never flattered.
    """
    point = RatePoint(variant=variant, offered_per_s=rate, scheduled=max(1, round(rate * seconds)))
    done = bytearray(point.scheduled)  # 1: completed or failed
    due = itertools.count()
    start = time.perf_counter() + 0.01
    last_done = start

    async def worker(index: int) -> None:
        nonlocal last_done
        while (i := next(due)) < point.scheduled:
            scheduled = start + i / rate
            await anyio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                await operation(index)
            except Exception:
                point.errors += 1
                done[i] = 1
                continue
            done[i] = 1
            last_done = time.perf_counter()
            point.latencies_s.append(last_done - scheduled)
            point.completed += 1

    cpu = time.process_time()
    with anyio.move_on_after(seconds + drain_s):
        async with anyio.create_task_group() as group:
            for index in range(min(workers, point.scheduled)):
                group.start_soon(worker, index)
    ended = time.perf_counter()
    point.cpu_s = time.process_time() - cpu
    point.elapsed_s = max(last_done - start, point.scheduled / rate) if point.completed else 0.0
    censored = [ended - (start + i / rate) for i in range(point.scheduled) if not done[i]]
    point.unfinished = len(censored)
    point.latencies_s += censored
    return point
