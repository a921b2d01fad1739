"""How deep a value nests, counted without recursion, so any depth is measured safely.

msgspec encodes and decodes nested values recursively, under Python's recursion limit
(1,000 frames shared with the caller's own): a value about 1,000 deep fails to encode,
one a little less deep encodes but never decodes again, and whether one decodes can
depend on how deep the reading caller's stack is. The store refuses values nested
deeper than :data:`MAX_NESTING` before anything is written. Measured on CPython 3.11
with msgspec 0.22: a value 100 deep still decodes from a caller 900 frames deep, so 64
leaves a wide margin from any reasonable stack (web frameworks take a few dozen).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import msgspec

__all__ = ["MAX_NESTING", "nests_deeper_than"]

#: The deepest an event, a snapshot state or metadata may nest: containers (mappings,
#: lists, tuples, sets, Structs, dataclasses) inside one another, the value itself
#: counted as 1.
MAX_NESTING = 64

_SCALARS = frozenset({str, int, float, bool, bytes, bytearray, type(None)})


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` holds containers more than ``limit`` deep (itself is depth 1).

    Walked level by level; a level holds each container once, however many paths lead
    to it, so shared parts cost at most one visit per level, and a value that holds
    itself (which nests without end) is found deeper than any limit.
    """
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        below: dict[int, Any] = {}
        found = False
        for item in level:
            children = _children(item)
            if children is None:
                continue
            found = True
            if not _SCALARS.issuperset(map(type, children)):  # one pass in C for scalars
                below.update((id(c), c) for c in children if type(c) not in _SCALARS)
        if found and depth > limit:
            return True
        level = list(below.values())
    return False


def _children(item: Any) -> Iterable[Any] | None:
    """The values a container holds, or None for a value that holds none."""
    kind = type(item)
    if kind is dict:
        return item.values()  # type: ignore[no-any-return]
    if kind is list or kind is tuple:
        return item  # type: ignore[no-any-return]
    if isinstance(item, dict):
        return item.values()
    if isinstance(item, list | tuple | set | frozenset):
        return item
    if isinstance(item, msgspec.Struct):
        return msgspec.structs.astuple(item)
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return [getattr(item, field.name) for field in dataclasses.fields(item)]
    return None
