"""The load generator of ``benchmarks/loadtest.py``: the workload and the open loop.

Request ``i`` of a step is due at ``t0 + i / rate``. It is sent on its own task, over a
pool of keep-alive connections, whatever happened to the requests before it, and its
latency runs from the time it was *due*: a server that falls behind is charged for the
queue it builds (no coordinated omission). Requests unanswered after the drain period
are cancelled and count as errors ("unfinished"), with their latency so far.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

__all__ = ["Request", "StepResult", "Workload", "percentile", "run_step"]

#: The appended event's JSON size, about (the harness's append workload uses 200 bytes).
EVENT_BYTES = 200
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Request:
    kind: str  # "append" or "load"
    aggregate: int
    path: str
    body: bytes | None  # None: a GET


class Workload:
    """Appends to ``aggregates`` users in turn, each at the version its last append
    returned; a ``get_ratio`` share of the requests load a user already written."""

    def __init__(self, aggregates: int, get_ratio: float, seed: int = 1) -> None:
        self._aggregates = aggregates
        self._get_ratio = get_ratio
        self._random = random.Random(seed)
        self._prefix = f"/aggregates/lt-{uuid.uuid4().hex[:8]}-"  # reruns never collide
        self._versions = [0] * aggregates
        self._written: list[int] = []
        self._next = 0
        note = "x" * (EVENT_BYTES - 60)
        self._event = {"type": "ItemAdded", "sku": "sku-12345", "qty": 1, "note": note}
        self._encode = msgspec.json.Encoder().encode

    def next(self) -> Request:
        if self._written and self._random.random() < self._get_ratio:
            aggregate = self._random.choice(self._written)
            return Request("load", aggregate, f"{self._prefix}{aggregate}", None)
        aggregate, self._next = self._next, (self._next + 1) % self._aggregates
        body = {"expected_version": self._versions[aggregate], "events": [self._event]}
        path = f"{self._prefix}{aggregate}/changesets"
        return Request("append", aggregate, path, self._encode(body))

    def settle(self, request: Request, status: int, body: bytes) -> None:
        """Remember the version an append returned: the next append expects it."""
        if request.kind != "append" or status != 201:
            return
        if self._versions[request.aggregate] == 0:
            self._written.append(request.aggregate)
        self._versions[request.aggregate] = msgspec.json.decode(body)["version"]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..1 (1.0 is the maximum); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


@dataclass(slots=True)
class StepResult:
    """What one step (one rate, a set duration) measured; times in seconds."""

    offered_per_s: float
    seconds: float
    latencies: list[float] = field(default_factory=list, repr=False)
    append_latencies: list[float] = field(default_factory=list, repr=False)
    load_latencies: list[float] = field(default_factory=list, repr=False)
    send_lags: list[float] = field(default_factory=list, repr=False)
    statuses: Counter[str] = field(default_factory=Counter)
    appends_ok: int = 0
    loads_ok: int = 0
    elapsed: float = 0.0
    cpu: dict[str, float | None] = field(default_factory=dict)
    #: The other runs of this step (see ``loadtest.Steps``), summarised.
    other_runs: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def errors(self) -> int:
        return self.statuses.total() - self.appends_ok - self.loads_ok

    @property
    def p99_ms(self) -> float:
        return 1e3 * percentile(self.latencies, 0.99)

    def passed(self, p99_limit_ms: float) -> bool:
        return self.errors == 0 and self.p99_ms < p99_limit_ms

    def summary(self, p99_limit_ms: float) -> dict[str, Any]:
        def ms(values: Sequence[float], q: float) -> float:
            return round(1e3 * percentile(values, q), 3)

        window = max(self.elapsed, self.seconds)
        return {
            "offered_per_s": self.offered_per_s,
            "achieved_per_s": round((self.appends_ok + self.loads_ok) / window, 1),
            "appends_per_s": round(self.appends_ok / window, 1),
            "requests": self.statuses.total(),
            "appends_ok": self.appends_ok,
            "loads_ok": self.loads_ok,
            "errors": self.errors,
            "statuses": dict(sorted(self.statuses.items())),
            **{f"p{round(100 * q)}_ms": ms(self.latencies, q) for q in (0.5, 0.95, 0.99)},
            "max_ms": ms(self.latencies, 1.0),
            "append_p50_ms": ms(self.append_latencies, 0.5),
            "append_p99_ms": ms(self.append_latencies, 0.99),
            "load_p50_ms": ms(self.load_latencies, 0.5),
            "load_p99_ms": ms(self.load_latencies, 0.99),
            "send_lag_p50_ms": ms(self.send_lags, 0.5),
            "send_lag_p99_ms": ms(self.send_lags, 0.99),
            "cpu_share": self.cpu,
            "other_runs": self.other_runs,
            "passed": self.passed(p99_limit_ms),
        }


async def run_step(
    session: aiohttp.ClientSession,
    base_url: str,
    workload: Workload,
    *,
    rate: float,
    seconds: float,
    drain: float,
    on_start: Callable[[], None] = lambda: None,
) -> StepResult:
    """Offer ``rate`` requests a second for ``seconds``, then wait ``drain`` at most."""
    step = StepResult(offered_per_s=rate, seconds=seconds)
    total = max(1, round(rate * seconds))
    in_flight: dict[asyncio.Task[None], float] = {}  # task -> its due time

    async def one(request: Request, due: float) -> None:
        step.send_lags.append(time.perf_counter() - due)
        try:
            status, body = await _send(session, base_url + request.path, request.body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            step.statuses[type(exc).__name__] += 1
            step.latencies.append(time.perf_counter() - due)
            return
        latency = time.perf_counter() - due
        _record(step, request, status, latency)
        workload.settle(request, status, body)

    on_start()
    start = time.perf_counter() + 0.01
    progress = asyncio.create_task(_progress(step, start, total, in_flight))
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(workload.next(), due))
        in_flight[task] = due
        task.add_done_callback(in_flight.pop)
    if in_flight:
        await asyncio.wait(list(in_flight), timeout=drain)
    ended = time.perf_counter()
    step.elapsed = ended - start
    for task, due in list(in_flight.items()):  # unanswered: errors, with their time so far
        task.cancel()
        step.statuses["unfinished"] += 1
        step.latencies.append(ended - due)
    await asyncio.gather(*in_flight, return_exceptions=True)
    progress.cancel()
    return step


def _record(step: StepResult, request: Request, status: int, latency: float) -> None:
    step.statuses[str(status)] += 1
    step.latencies.append(latency)
    if request.kind == "append":
        step.append_latencies.append(latency)
        step.appends_ok += status == 201
    else:
        step.load_latencies.append(latency)
        step.loads_ok += status == 200


async def _send(session: aiohttp.ClientSession, url: str, body: bytes | None) -> tuple[int, bytes]:
    if body is None:
        async with session.get(url) as response:
            return response.status, await response.read()
    async with session.post(url, data=body, headers=_JSON) as response:
        return response.status, await response.read()


async def _progress(
    step: StepResult, start: float, total: int, in_flight: dict[asyncio.Task[None], float]
) -> None:
    """A line to stderr each second: answers so far, the queue, the last second's p99."""
    seen = 0
    while True:
        await asyncio.sleep(1.0)
        recent, seen = step.latencies[seen:], len(step.latencies)
        print(
            f"  {step.offered_per_s:6.0f}/s  t={time.perf_counter() - start:4.1f} s  "
            f"answered {seen}/{total}  in flight {len(in_flight)}  errors {step.errors}  "
            f"p99 of the last second {1e3 * percentile(recent, 0.99):.1f} ms",
            file=sys.stderr,
            flush=True,
        )
