"""The processes of ``benchmarks/loadtest.py``: the web app and the stub, their cores,
and the CPU each of them (and everything else on the machine) used during a step."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cores", "CpuMeters", "Servers", "choose_cores", "machine_busy", "start_servers"]

REPO_ROOT = Path(__file__).resolve().parents[1]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Cores:
    """The load generator's core (and the stub's) and the web app's; None: one core."""

    generator: int | None
    server: int | None


def choose_cores() -> Cores:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return Cores(None, None)
    return Cores(generator=allowed[0], server=allowed[-1])


@dataclass(frozen=True, slots=True)
class Servers:
    base_url: str
    pids: dict[str, int]  # "webapp", "stub", "emulator": the ones we started


@contextlib.contextmanager
def start_servers(
    backend: str, cores: Cores, *, stub_latency_ms: float = 0.0, uvicorn: tuple[str, str]
) -> Iterator[Servers]:
    """The web app on its own core, on the stub or the embedded emulator (both on the
    generator's core: DynamoDB would not be on the server's), or in memory.

    ``uvicorn`` is the web app's ``(--loop, --http)``.
    """
    with contextlib.ExitStack() as stack:
        pids: dict[str, int] = {}
        store = ["--memory"] if backend == "memory" else ["--emulator"]
        if backend == "stub":
            command = [sys.executable, "-m", "benchmarks.stub_server", "--stop-on-stdin-eof"]
            stub = stack.enter_context(
                _process([*command, "--latency-ms", str(stub_latency_ms)], cores.generator)
            )
            assert stub.stdout is not None
            store = ["--stub", stub.stdout.readline().decode().strip()]
            pids["stub"] = stub.pid
        port = _free_port()
        command = [sys.executable, "-m", "examples.webapp", "--port", str(port), *store]
        command += ["--loop", uvicorn[0], "--http", uvicorn[1]]
        webapp = stack.enter_context(_process(command, cores.server))
        pids["webapp"] = webapp.pid
        _wait_listening(port, webapp, timeout=60)
        emulator = _only_child(webapp.pid) if backend == "emulator" else None
        if emulator is not None:  # the web app's child: off its core, like the stub
            _pin_threads(emulator, cores.generator)
            pids["emulator"] = emulator
        yield Servers(f"http://127.0.0.1:{port}", pids)


@contextlib.contextmanager
def _pinned(core: int | None) -> Iterator[None]:
    """Processes started in this block run on ``core`` (a child inherits the mask)."""
    before = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def _process(command: list[str], core: int | None) -> Iterator[subprocess.Popen[bytes]]:
    """A child on ``core``, stopped on the way out (SIGTERM, then SIGKILL after 10 s).

    Its stdin stays open: a child started with ``--stop-on-stdin-eof`` exits with us.
    """
    with _pinned(core):
        child = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, child: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the web app exited with code {child.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise SystemExit(f"the web app did not listen on port {port} within {timeout:g} s")


def _pin_threads(pid: int, core: int | None) -> None:
    """Move every thread of a running process to ``core``."""
    if core is None:
        return
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(thread), {core})


def _only_child(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) == 1:
            return int(children[0])
    return None


# -- CPU ----------------------------------------------------------------------------------


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of ``pid``, or of this process."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _machine_cpu() -> float:
    """Busy CPU seconds of the whole machine, all cores (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


async def machine_busy(seconds: float = 1.0) -> float:
    """How many cores' worth the whole machine used over the next ``seconds``."""
    before, wall = _machine_cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (_machine_cpu() - before) / (time.perf_counter() - wall)


class CpuMeters:
    """Each process's CPU over a step, as a share of one core (1.0: a core busy), and
    ``others``: what the rest of the machine used meanwhile (other work skews a step)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids: dict[str, int | None] = {**pids, "generator": None}
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def _read(self) -> dict[str, float]:
        readings = {}
        for name, pid in self._pids.items():
            with contextlib.suppress(OSError):
                readings[name] = _process_cpu(pid)
        readings["machine"] = _machine_cpu()
        return readings

    def start(self) -> None:
        self._start, self._wall = self._read(), time.perf_counter()

    def shares(self) -> dict[str, float | None]:
        end, wall = self._read(), time.perf_counter() - self._wall
        used = {name: end[name] - self._start[name] for name in end if name in self._start}
        shares: dict[str, float | None] = {n: round(u / wall, 3) for n, u in used.items()}
        ours = sum(used.get(name, 0.0) for name in self._pids)
        shares["others"] = round(max(0.0, used["machine"] - ours) / wall, 3)
        del shares["machine"]
        return shares
