"""The snapshot file of a data directory: the whole emulator state at one moment.

Format: the header line ``{"format": "eventstore-emulator-snapshot", "version": 2,
"moto": "5.2.5", "generation": N}``, the body (``_moto_state``: moto's backends and the
request tokens, pickled), then a trailer of the body's length (8 bytes, big-endian) and
CRC-32 (4 bytes). A snapshot is only ever written to a temporary name, ``fsync``-ed and
renamed into place (``_datadir``), so a file under the final name is whole unless the
disk damaged it; a body whose length or CRC does not match is refused, never half-read.
The body is pickled moto objects, which only the moto that wrote them can read: the
header names it, and another is refused before the body is touched.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import IO

from eventstore_async.emulator._journal import FORMAT_VERSION, DataDirError

SNAPSHOT_NAME = "snapshot"
SNAPSHOT_FORMAT = "eventstore-emulator-snapshot"

_TRAILER = struct.Struct(">QI")  # body length, crc32


def write_snapshot(path: Path, moto_version: str, generation: int, body: bytes) -> None:
    """Write the snapshot file at ``path`` and fsync it (not the directory)."""
    header = {
        "format": SNAPSHOT_FORMAT,
        "version": FORMAT_VERSION,
        "moto": moto_version,
        "generation": generation,
    }
    with open(path, "wb") as file:
        file.write(json.dumps(header).encode() + b"\n")
        file.write(body)
        file.write(_TRAILER.pack(len(body), zlib.crc32(body)))
        file.flush()
        os.fsync(file.fileno())


def read_generation(path: Path, moto_version: str) -> int:
    """The generation in the snapshot's header; raise DataDirError if it is not ours."""
    with open(path, "rb") as file:
        return _check_header(file.readline(), path, moto_version)


def read_body(path: Path, moto_version: str) -> bytes:
    """The snapshot's body, checked whole; raise DataDirError if damaged or foreign."""
    with open(path, "rb") as file:
        _check_header(file.readline(), path, moto_version)
        return _checked_body(file, path)


def _checked_body(file: IO[bytes], path: Path) -> bytes:
    rest = file.read()
    if len(rest) >= _TRAILER.size:
        body, trailer = rest[: -_TRAILER.size], rest[-_TRAILER.size :]
        length, crc = _TRAILER.unpack(trailer)
        if length == len(body) and crc == zlib.crc32(body):
            return body
    raise DataDirError(
        f"{path} is damaged (its length or checksum does not match); refusing to start on "
        "a partial state. It was written whole and renamed into place, so the disk or "
        "something outside the emulator changed it"
    )


def _check_header(line: bytes, path: Path, moto_version: str) -> int:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
        raise DataDirError(f"{path} is not an emulator snapshot; move it aside or restore it")
    version, moto, generation = header.get("version"), header.get("moto"), header.get("generation")
    if version != FORMAT_VERSION or moto != moto_version:
        raise DataDirError(
            f"{path} was written by snapshot format {version} with moto {moto}; this "
            f"emulator reads format {FORMAT_VERSION} with moto {moto_version}. Start it with "
            "the versions that wrote it, or move the directory aside to start empty"
        )
    if not isinstance(generation, int) or generation < 1:
        raise DataDirError(f"{path} has a damaged header: {line[:200]!r}")
    return generation
