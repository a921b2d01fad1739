"""Open a data dir as the emulator does and SIGKILL this process at one step of the compaction.

``python tests/compaction_crash.py DIR STEP``; STEP is ``{snapshot,journal}-{torn,written,
renamed}``: the temporary snapshot (or new journal) cut in half before its ``fsync``,
written whole but not renamed, or renamed but the directory not yet ``fsync``-ed. Exits
with 1 if the compaction finished without reaching the step.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(file_name: str, when: str) -> None:
    """Wrap os.fsync and os.replace to die at the step on ``file_name``."""
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: Any) -> None:
        if when == "torn" and os.readlink(f"/proc/self/fd/{fd}").endswith(file_name):
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            die()
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        ours = os.fspath(src).endswith(file_name)
        if ours and when == "written":
            die()
        real_replace(src, dst)
        if ours and when == "renamed":
            die()

    os.fsync = fsync
    os.replace = replace  # type: ignore[assignment]


def main(directory: str, step: str) -> int:
    name, when = step.split("-")
    arm(f"{name}.tmp", when)
    from eventstore_async.emulator._server import build_app

    build_app(Path(directory))
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
