"""The journal of a data directory: every request that changed something since the snapshot.

Design. With ``--data-dir DIR`` every request that may change state (DynamoDB writes,
S3 ``PUT``/``POST``/``DELETE``) and succeeded is appended to ``DIR/journal`` and
``fsync``-ed *before* its response leaves the server, inside the global lock, so an
acknowledged write is on disk whatever happens to the process next (``SIGKILL``
included). At start-up the journal is replayed through moto, in order, on top of the
snapshot it follows (``_datadir``), before the server answers anything: moto is
deterministic given the same requests in the same order, so tables, items, buckets and
objects come back as they were. The few things that are not deterministic are carried in
the record: its wall-clock time (request tokens keep their ten minutes from the original
request) and the id moto gave a multipart upload (later parts of that upload are
replayed under the new id).

Record format: the header line ``{"format": ..., "version": 2, "moto": "5.2.5",
"snapshot": N}`` (``N``: the generation of the snapshot the records apply on top of, 0
for none), then records, each a 4-byte big-endian length, a 4-byte CRC-32 and a
MessagePack body. A record cut short by a crash (it was never acknowledged: the answer
waits for ``fsync``) is dropped, and the file truncated there, when the journal is opened
again; that can only be the last record. A damaged record with records after it, or one
whose checksum holds but that does not decode, is refused (nothing is truncated). A
journal of format 1 (before snapshots; its header has no ``snapshot``) is read as
following no snapshot. Another format or another moto is refused, never half-read.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

JOURNAL_NAME = "journal"
FORMAT_NAME = "eventstore-emulator-journal"
#: The data dir format (journal and snapshot); 1 had a journal only, and is still read.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

_FRAME = struct.Struct(">II")  # length, crc32
_READ_OPERATIONS = re.compile(r"\.(Get|BatchGet|TransactGet|Query|Scan|Describe|List)")
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
_UPLOAD_ID_PARAM = re.compile(r"(^|[?&])uploadId=([^&]*)")
_URI_KEYS = ("QUERY_STRING", "RAW_URI", "REQUEST_URI")  # where werkzeug keeps the query


class DataDirError(RuntimeError):
    """The data directory cannot be used: another format, another moto, damaged, or in use."""


class Record(msgspec.Struct, kw_only=True):
    """One journaled request: what the WSGI app needs to see it again."""

    at: float  # wall-clock time it was served
    environ: dict[str, str]
    preserved: dict[str, str] | None = None  # moto's original spelling of header names
    body: bytes = b""
    upload_id: str | None = None  # the id moto gave a new multipart upload


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def changes_state(environ: dict[str, Any]) -> bool:
    """True for a request that may change the emulator's state (so it is journaled)."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if isinstance(target, str):  # the DynamoDB JSON protocol names its operation
        return _READ_OPERATIONS.search(target) is None
    if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
        return False
    return environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE")


def record_of(environ: dict[str, Any], body: bytes, response: bytes, preserved_key: str) -> Record:
    """The journal record of a request that was served."""
    kept = {k: v for k, v in environ.items() if isinstance(v, str) and k.isupper()}
    preserved = environ.get(preserved_key)
    match = _UPLOAD_ID.search(response) if kept.get("REQUEST_METHOD") == "POST" else None
    return Record(
        at=time.time(),
        environ=kept,
        preserved=dict(preserved) if isinstance(preserved, dict) else None,
        body=body,
        upload_id=match.group(1).decode() if match else None,
    )


class Journal:
    """One open journal file, locked against an emulator of the journal-only format."""

    def __init__(self, path: Path, moto_version: str) -> None:
        """Open (or create) the journal at ``path`` and check its header.

        Raises DataDirError when it was written by another format or moto, or when an
        emulator has it open.
        """
        self.path = path
        self._moto = moto_version
        self._file: IO[bytes] = open(path, "a+b")  # noqa: SIM115
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise DataDirError(f"{path.parent} is in use by another emulator") from None
        try:
            self.snapshot = self._open_header()
        except BaseException:
            self._file.close()
            raise
        self.size = self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        """Release the lock and the file."""
        self._file.close()

    def records(self) -> Iterator[Record]:
        """Yield every whole record; drop (truncate) a torn tail.

        Raises DataDirError, before anything is truncated, for a damaged record that is
        not the last one (a torn write can only be the last: records after it were
        acknowledged) and for a record whose checksum holds but that does not decode.
        """
        end = self._file.seek(0, os.SEEK_END)
        self._file.seek(0)
        self._file.readline()
        while True:
            start = self._file.tell()
            record = self._read_one(start, end)
            if record is None:
                self._file.truncate(start)  # a record cut short by a crash: never acked
                self._sync()
                self.size = start
                return
            yield record

    def append(self, record: Record) -> None:
        """Write one record and fsync it (the request is acknowledged after this)."""
        payload = _encoder.encode(record)
        self._file.seek(0, os.SEEK_END)
        self._file.write(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
        self._sync()
        self.size += _FRAME.size + len(payload)

    def _open_header(self) -> int:
        self._file.seek(0)
        first = self._file.readline()
        if first:
            return check_header(first, self.path, self._moto)
        self._file.write(header_line(self._moto, snapshot=0))  # a new journal
        self._sync()
        return 0

    def _read_one(self, start: int, end: int) -> Record | None:
        """The record at ``start``; None for a torn last record (or the end)."""
        frame = self._file.read(_FRAME.size)
        if len(frame) < _FRAME.size:
            return None
        length, crc = _FRAME.unpack(frame)
        payload = self._file.read(length)
        if len(payload) < length:
            return None
        if zlib.crc32(payload) != crc:
            if self._file.tell() < end:
                raise self._damaged(start, "its checksum does not match and records follow")
            return None
        try:
            return _decoder.decode(payload)
        except msgspec.MsgspecError as exc:
            raise self._damaged(
                start, f"its checksum holds but it does not decode ({exc})"
            ) from exc

    def _damaged(self, start: int, why: str) -> DataDirError:
        return DataDirError(
            f"{self.path}: the record at byte {start} is damaged: {why}. Nothing was "
            "changed; move the data directory aside (or restore it from a copy) to start"
        )

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())


def header_line(moto_version: str, *, snapshot: int) -> bytes:
    """The first line of a journal following snapshot generation ``snapshot``."""
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "moto": moto_version,
        "snapshot": snapshot,
    }
    return json.dumps(header).encode() + b"\n"


def check_header(line: bytes, path: Path, moto_version: str) -> int:
    """The snapshot generation a journal's header names; raise DataDirError if foreign."""
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise DataDirError(
            f"{path} is not an emulator journal; "
            "give --data-dir an empty directory or one the emulator wrote"
        )
    version, moto, snapshot = header.get("version"), header.get("moto"), header.get("snapshot", 0)
    if version not in READABLE_VERSIONS or moto != moto_version:
        raise DataDirError(
            f"{path.parent} was written by journal format {version} with moto {moto}; this "
            f"emulator reads formats {', '.join(map(str, READABLE_VERSIONS))} with moto "
            f"{moto_version}. Start it with the versions that wrote it, or move the "
            "directory aside to start empty"
        )
    if not isinstance(snapshot, int) or snapshot < 0 or (version == 1 and snapshot != 0):
        raise DataDirError(f"{path} has a damaged header: {line[:200]!r}")
    return snapshot


def write_new_journal(path: Path, moto_version: str, *, snapshot: int) -> None:
    """Write (and fsync) a journal with no records that follows ``snapshot``."""
    with open(path, "wb") as file:
        file.write(header_line(moto_version, snapshot=snapshot))
        file.flush()
        os.fsync(file.fileno())


class UploadIds:
    """Multipart upload ids as journaled, mapped to the ids moto gives them on replay."""

    def __init__(self) -> None:
        self._new: dict[str, str] = {}

    def rewrite(self, environ: dict[str, str]) -> dict[str, str]:
        """The environ with a journaled upload id replaced by its replayed one."""
        if "uploadId=" not in environ.get("QUERY_STRING", ""):
            return environ
        rewritten = dict(environ)
        for key in _URI_KEYS:
            if key in rewritten:
                rewritten[key] = _UPLOAD_ID_PARAM.sub(self._replace, rewritten[key])
        return rewritten

    def _replace(self, match: re.Match[str]) -> str:
        old = match.group(2)
        return f"{match.group(1)}uploadId={self._new.get(old, old)}"

    def learn(self, record: Record, response: bytes) -> None:
        """Remember the id moto gave the upload that ``record`` created on replay."""
        if record.upload_id is None:
            return
        match = _UPLOAD_ID.search(response)
        if match:
            self._new[record.upload_id] = match.group(1).decode()


Replayer = Callable[[Record, dict[str, str]], tuple[int, bytes]]


def replay(
    records: Iterable[Record],
    where: Path,
    serve: Replayer,
    pin_clock: Callable[[float | None], None],
) -> int:
    """Replay every record through ``serve``; return how many.

    ``pin_clock(at)`` makes the request-token clock read the record's time while it is
    replayed (``pin_clock(None)`` afterwards). Raises DataDirError when a request that
    succeeded once fails on replay (the directory does not match this emulator).
    """
    uploads = UploadIds()
    count = 0
    try:
        for count, record in enumerate(records, start=1):
            pin_clock(record.at)
            status, response = serve(record, uploads.rewrite(record.environ))
            if not 200 <= status < 300:
                operation = record.environ.get("HTTP_X_AMZ_TARGET") or (
                    f"{record.environ.get('REQUEST_METHOD')} {record.environ.get('PATH_INFO')}"
                )
                raise DataDirError(
                    f"{where}: journal record {count} ({operation}) succeeded "
                    f"when it was written but fails on replay (HTTP {status}: "
                    f"{response[:200]!r}); refusing to start on a partial state"
                )
            uploads.learn(record, response)
    finally:
        pin_clock(None)
    return count
