"""Where the benchmark sends its requests: the stub, the embedded emulator, or an endpoint.

Each target is an async context manager that yields a :class:`Target`: its endpoint,
how to name and create a table for one configuration, and the server's process id (to
pin it to its own core). The client pins itself first, so every thread it starts (boto3's
worker threads included) stays on the client's core.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from eventstore_async import AccessDeniedError, EventStore, StoreConfig
from eventstore_async.emulator import Emulator

from .variants import Endpoint

__all__ = ["TARGETS", "Cores", "Target", "open_target", "pin_cores"]

TARGETS = ("stub", "emulator", "env")
_STUB_KEYS = ("bench", "bench")  # the stub and the emulator check no signature
_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Cores:
    """The client's core and the server's (``None``: not pinned, one core only)."""

    client: int | None
    server: int | None


def pin_cores() -> Cores:
    """Pin this process to the first allowed core; keep the last one for the server."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return Cores(client=None, server=None)
    os.sched_setaffinity(0, {allowed[0]})
    return Cores(client=allowed[0], server=allowed[-1])


def pin_process(pid: int, core: int | None) -> None:
    """Pin every thread of ``pid`` (threads it starts later inherit the mask)."""
    if core is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), {core})


@dataclass(slots=True)
class Target:
    name: str
    endpoint: Endpoint
    #: A fixed table for every configuration, or None: a fresh table per configuration.
    fixed_table: str | None
    server_pid: int | None = None

    def table_name(self, label: str) -> str:
        return self.fixed_table or f"bench-{label}"

    async def prepare_table(self, table: str) -> None:
        """Create the table if this target needs it (the stub does not)."""
        if self.name == "stub":
            return
        config = StoreConfig(
            table_name=table,
            endpoint_url=self.endpoint.url,
            region_name=self.endpoint.region,
            aws_access_key_id=self.endpoint.access_key,
            aws_secret_access_key=self.endpoint.secret_key,
            aws_session_token=self.endpoint.session_token,
        )
        # Without CreateTable permission the table must exist already.
        async with EventStore(config) as store:
            with contextlib.suppress(AccessDeniedError):
                await store.create_schema()

    async def request_counts(self) -> dict[str, int] | None:
        """Requests the stub has answered so far, per operation (None on other targets)."""
        if self.name != "stub" or self.endpoint.url is None:
            return None
        host, port = self.endpoint.url.removeprefix("http://").rsplit(":", 1)
        request = (
            b"POST / HTTP/1.1\r\nHost: stub\r\nX-Amz-Target: DynamoDB_20120810.StubCounts\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(request)
            answer = b""
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    answer += await stream.receive()
        counts: dict[str, int] = msgspec.json.decode(answer.split(b"\r\n\r\n", 1)[1])
        return counts


@asynccontextmanager
async def open_target(name: str, cores: Cores, *, latency_ms: float = 0.0) -> AsyncIterator[Target]:
    if name == "stub":
        async with _stub(cores, latency_ms) as target:
            yield target
    elif name == "emulator":
        async with Emulator() as emulator:
            assert emulator.pid is not None
            pin_process(emulator.pid, cores.server)
            endpoint = Endpoint(emulator.endpoint_url, "us-east-1", *_STUB_KEYS)
            yield Target("emulator", endpoint, fixed_table=None, server_pid=emulator.pid)
    elif name == "env":
        yield _env_target()
    else:
        raise ValueError(f"unknown target {name!r}")


@asynccontextmanager
async def _stub(cores: Cores, latency_ms: float) -> AsyncIterator[Target]:
    command = [sys.executable, "-m", "benchmarks.stub_server", "--stop-on-stdin-eof"]
    command += ["--latency-ms", str(latency_ms)]
    if cores.server is not None:
        command += ["--cpu", str(cores.server)]
    process = await anyio.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_REPO_ROOT
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(30):
            line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 1024)
        endpoint = Endpoint(line.decode().strip(), "us-east-1", *_STUB_KEYS)
        yield Target("stub", endpoint, fixed_table="bench", server_pid=process.pid)
    finally:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):  # it may have died already
                process.terminate()
            await process.wait()
            await process.aclose()


def _env_target() -> Target:
    table = os.environ.get("EVENTSTORE_BENCH_TABLE")
    if not table:
        raise SystemExit("--target env needs EVENTSTORE_BENCH_TABLE (and usually ..._ENDPOINT_URL)")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = Endpoint(os.environ.get("EVENTSTORE_BENCH_ENDPOINT_URL") or None, region)
    return Target("env", endpoint, fixed_table=table)
