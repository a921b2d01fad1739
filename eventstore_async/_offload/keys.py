"""Object keys: which table and aggregate an offloaded payload belongs to.

A key is ``{key_prefix}{table name}/{base64url(aggregate id)}/{random hex}``. The table
name lets stores on several tables share one bucket and prefix: each sweep deletes only
keys under its own table's name. The id is encoded, so no id can name a key outside
the prefix; the random part makes every upload's key new.

Release 0.1.0 wrote ``{key_prefix}{base64url(aggregate id)}/{random hex}``
(*legacy* keys). Such a key does not say which table wrote it, so the sweep deletes it
only when told that no other table wrote under the prefix.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass

__all__ = ["KeyOwner", "object_key", "owner_of_key"]


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """The aggregate an object key was made for; ``legacy`` when the key names no table."""

    aggregate_id: str
    legacy: bool


def object_key(prefix: str, table: str, aggregate_id: str) -> str:
    return f"{prefix}{table}/{_encode(aggregate_id)}/{uuid.uuid4().hex}"


def owner_of_key(prefix: str, table: str, key: str) -> KeyOwner | None:
    """Who a key under ``prefix`` belongs to, from the point of view of ``table``: None
    for another table's keys and for keys this library did not make."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) == 3 and parts[0] == table:
        aggregate_id = _decode(parts[1], parts[2])
        return None if aggregate_id is None else KeyOwner(aggregate_id, legacy=False)
    if len(parts) == 2:
        aggregate_id = _decode(parts[0], parts[1])
        return None if aggregate_id is None else KeyOwner(aggregate_id, legacy=True)
    return None


def _encode(aggregate_id: str) -> str:
    return base64.urlsafe_b64encode(aggregate_id.encode()).rstrip(b"=").decode()


def _decode(encoded: str, name: str) -> str | None:
    if not encoded or not name:
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
