"""The emulator's whole state as one snapshot body, and back.

The state is moto's in-use backends (every ``BackendDict`` that holds an account: tables,
items, streams, buckets, objects, multipart uploads in progress...) plus the request
tokens. It is pickled: moto's models are plain objects (S3 keys bring their own
``__getstate__``, which reads the object's bytes out of its temporary file), so a pickle
is exact where a re-creation through the API would not be (ETags of multipart objects,
modification times, stream records, upload ids). A pickle is only readable by the moto
that wrote it; the snapshot's header names that moto. Imported only by the emulator
subprocess (it imports moto). Runs under the server's global lock or before serving.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from typing import Any

from eventstore_async.emulator._tokens import RequestTokens


class StateNotCaptured(RuntimeError):
    """Some of moto's state cannot be pickled; the journal is kept instead."""


def capture(tokens: RequestTokens) -> bytes:
    """The snapshot body of the current state; raise StateNotCaptured if it cannot be."""
    from moto.core.base_backend import BackendDict

    backends = {
        _address(live): dict(live)
        for live in list(BackendDict._instances)  # type: ignore[misc]
        if len(live)
    }
    state = {"backends": backends, "tokens": tokens.entries()}
    try:
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise StateNotCaptured(f"moto's state cannot be snapshotted: {exc}") from exc


def restore(body: bytes, tokens: RequestTokens) -> None:
    """Put the state of a snapshot body in place of moto's (empty) backends and tokens.

    Raises ValueError when the body does not unpickle into a state of this shape.
    """
    from moto.core.base_backend import BackendDict

    try:
        state = pickle.loads(body)  # our own file, checked whole (CRC) before this
        backends: dict[tuple[str, str], dict[str, Any]] = state["backends"]
        entries: list[tuple[str, str, float]] = state["tokens"]
    except Exception as exc:
        raise ValueError(f"the snapshot does not hold an emulator state: {exc!r}") from exc
    for (module, name), accounts in backends.items():
        live = getattr(importlib.import_module(module), name)
        live.clear()
        dict.update(live, accounts)
        if live not in BackendDict._instances:  # type: ignore[misc]
            BackendDict._instances.append(live)  # type: ignore[misc]
    _index_buckets()
    tokens.load(entries)


def _index_buckets() -> None:
    """Rebuild S3's index of bucket names from the restored buckets.

    moto keeps that index (``bucket_accounts``: name -> partition and account) on the
    ``BackendDict`` object, beside the accounts a snapshot holds. Left empty, an
    idempotent ``CreateBucket`` of an existing bucket (``create_schema`` again) would
    not find it and would put an empty bucket in its place.
    """
    from moto.s3.models import s3_backends

    index: dict[str, tuple[str, str]] = {}
    for account_id, account in dict.items(s3_backends):
        for backend in dict.values(account):
            for name in backend.buckets:
                index[name] = (backend.partition, account_id)
    s3_backends.bucket_accounts.clear()
    s3_backends.bucket_accounts.update(index)


def _address(live: Any) -> tuple[str, str]:
    """Module and attribute name of a BackendDict (to find it again after a restart)."""
    home = live.backend.__module__
    candidates = [home, *sorted(m for m in sys.modules if m.startswith("moto."))]
    for module_name in candidates:
        module = sys.modules.get(module_name)
        for name, value in vars(module).items() if module is not None else ():
            if value is live:
                return module_name, name
    raise StateNotCaptured(f"moto's backends of {live.service_name!r} are not a module global")
