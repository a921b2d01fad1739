"""DynamoDB's size accounting, for the emulator's item and transaction limits.

DynamoDB counts an item as the UTF-8 length of each attribute name plus the size of
its value: strings by their UTF-8 length, binaries by their byte length, numbers by
their significant digits (one byte per two digits, plus one), booleans and nulls one
byte, lists and maps three bytes plus one byte per element plus the elements (and a
map's keys), sets the sum of their elements. The limit is 400 KB (409,600 bytes) per
item and 4 MB per ``TransactWriteItems``.

These functions take attribute values as moto holds them (``DynamoType``: ``.type``,
``.value``) or in wire form (``{"S": "..."}``): anything with the one-key mapping shape.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

#: DynamoDB's item size limit (400 KB).
ITEM_SIZE_LIMIT = 400 * 1024
#: DynamoDB's limit on the aggregate size of one transaction's items (4 MB).
TRANSACTION_SIZE_LIMIT = 4 * 1024 * 1024
#: DynamoDB's limit on the actions of one transaction.
TRANSACTION_ACTIONS_LIMIT = 100

_CONTAINER_OVERHEAD = 3  # bytes per list or map
_ELEMENT_OVERHEAD = 1  # bytes per list element or map entry


def value_size(kind: str, value: Any) -> int:
    """The size DynamoDB counts for one attribute value of type ``kind``."""
    if kind == "S":
        return len(value.encode())
    if kind == "B":
        return binary_size(value)
    if kind == "N":
        return number_size(value)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return _CONTAINER_OVERHEAD + sum(_ELEMENT_OVERHEAD + typed_size(v) for v in value)
    if kind == "M":
        return _CONTAINER_OVERHEAD + sum(
            _ELEMENT_OVERHEAD + len(k.encode()) + typed_size(v) for k, v in value.items()
        )
    if kind in ("SS", "NS", "BS"):
        return sum(value_size(kind[0], element) for element in value)
    return len(str(value).encode())  # a type DynamoDB does not have: never under-count


def typed_size(value: Any) -> int:
    """Size of a typed value: moto's ``DynamoType`` or a wire-form ``{"S": "..."}``."""
    if isinstance(value, Mapping):
        ((kind, inner),) = value.items()
        return value_size(kind, inner)
    kind = getattr(value, "type", None)
    if isinstance(kind, str):
        return value_size(kind, value.value)
    return len(str(value).encode())


def item_size(attributes: Iterable[tuple[str, Any]]) -> int:
    """DynamoDB's size of an item given as ``(name, typed value)`` pairs."""
    return sum(len(name.encode()) + typed_size(value) for name, value in attributes)


def binary_size(value: bytes | str) -> int:
    """Byte length of a binary value (base64 text when it has not been decoded)."""
    if isinstance(value, str):
        return len(base64.b64decode(value))
    return len(value)


def number_size(text: str) -> int:
    """One byte per two significant digits, plus one (leading and trailing zeros dropped)."""
    mantissa = str(text).lstrip("+-").lower().partition("e")[0]
    digits = mantissa.replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def transaction_size(actions: Iterable[Mapping[str, Any]]) -> int:
    """The aggregate size of a ``TransactWriteItems`` request's items.

    A ``Put`` counts its item; an ``Update`` its key and the values it writes; a
    ``Delete`` or ``ConditionCheck`` its key.
    """
    total = 0
    for action in actions:
        for kind, body in action.items():
            if kind == "Put":
                total += item_size(body.get("Item", {}).items())
                continue
            total += item_size(body.get("Key", {}).items())
            if kind == "Update":
                values = body.get("ExpressionAttributeValues", {}).values()
                total += sum(typed_size(value) for value in values)
    return total
