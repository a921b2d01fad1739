"""Read-model documents written by projections (``Subscription.project``).

``project()`` writes its documents and the checkpoint in one ``TransactWriteItems``, so
its arguments obey that call's limits, checked here before anything is sent: at most
100 actions (one is the checkpoint) and at most one action per item (a key may not be
both put and deleted, nor deleted twice).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._codec import EventCodec
from .._errors import InvalidInputError
from .._records import MAX_TRANSACTION_ACTIONS, DeleteView, PutView, ViewRecord, Write
from .._validation import check_aggregate_id

__all__ = [
    "MAX_PROJECTED_DOCUMENTS",
    "ViewChanges",
    "check_documents",
    "check_name",
    "check_projection",
    "check_view_key",
    "check_view_name",
    "view_writes",
]

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: Documents one ``project()`` may put and delete: one action is the checkpoint.
MAX_PROJECTED_DOCUMENTS = MAX_TRANSACTION_ACTIONS - 1


def check_name(value: Any, argument: str) -> str:
    """Subscription and view names: 1 to 64 letters, digits and ._-"""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInputError(argument, "must be 1 to 64 characters of letters, digits and ._-")
    return value


def check_view_name(value: Any) -> str:
    return check_name(value, "view")


def check_view_key(value: Any, argument: str = "key") -> str:
    """Document keys follow the rules of aggregate ids."""
    return check_aggregate_id(value, argument)


#: One view's checked changes: (view, documents to put by key, keys to delete).
ViewChanges = tuple[str, dict[str, Any], list[str]]


def check_projection(view: Any, put: Any, delete: Any, views: Any) -> list[ViewChanges]:
    """``project()``'s arguments, checked: ``view``/``put``/``delete`` for one view, and
    ``views`` (view name -> ``{"put": {...}, "delete": [...]}``) for more, all in one
    transaction, so :data:`MAX_PROJECTED_DOCUMENTS` counts them all.

    Raises:
        InvalidInputError: as :func:`check_documents` (``argument`` prefixed with
            ``views[<name>].`` for an entry of ``views``), a view named twice, an entry
            that is not a mapping of ``put``/``delete``, or more than
            :data:`MAX_PROJECTED_DOCUMENTS` documents over all views.
    """
    changes: list[ViewChanges] = []
    if view is not None or put is not None or delete:
        name = check_view_name(view)
        changes.append((name, *check_documents(put, delete)))
    for name, spec in _view_specs(views):
        if any(name == seen for seen, _, _ in changes):
            raise InvalidInputError(f"views[{name!r}]", "names a view given twice")
        changes.append((name, *_checked_spec(name, spec)))
    total = sum(len(puts) + len(deletes) for _, puts, deletes in changes)
    if total > MAX_PROJECTED_DOCUMENTS:
        raise InvalidInputError(
            "views",
            f"{total} documents to put and delete over {len(changes)} views, over the "
            f"limit of {MAX_PROJECTED_DOCUMENTS} per project() (a transaction holds "
            f"{MAX_TRANSACTION_ACTIONS} actions, one is the checkpoint)",
        )
    return changes


def view_writes(codec: EventCodec, changes: list[ViewChanges]) -> list[Write]:
    """The writes of checked view changes: a put per document, a delete per key."""
    writes: list[Write] = []
    for name, puts, deletes in changes:
        writes += [
            PutView(ViewRecord(name, key, codec.encode_events([document])))
            for key, document in puts.items()
        ]
        writes += [DeleteView(name, key) for key in deletes]
    return writes


def _view_specs(views: Any) -> list[tuple[str, Any]]:
    if views is None:
        return []
    if not isinstance(views, Mapping):
        raise InvalidInputError(
            "views", f"must be a mapping of view name to changes, not {type(views).__name__}"
        )
    return [(check_name(name, "views"), spec) for name, spec in views.items()]


def _checked_spec(name: str, spec: Any) -> tuple[dict[str, Any], list[str]]:
    argument = f"views[{name!r}]"
    if not isinstance(spec, Mapping) or not set(spec) <= {"put", "delete"}:
        raise InvalidInputError(
            argument, 'must be a mapping with "put" (key -> document) and/or "delete" (keys)'
        )
    try:
        return check_documents(spec.get("put"), spec.get("delete", ()))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{argument}.{exc.argument}", exc.problem) from None


def check_documents(put: Any, delete: Any) -> tuple[dict[str, Any], list[str]]:
    """``project()``'s ``put`` (key -> document) and ``delete`` (keys), checked.

    Raises:
        InvalidInputError: not a mapping / a sequence of keys, more than
            :data:`MAX_PROJECTED_DOCUMENTS` in all (over DynamoDB's 100 actions), a bad
            key, or a key named twice (DynamoDB refuses two actions on one item).
    """
    documents = _documents(put)
    keys = _keys(delete)
    _check_document_count(len(documents), len(keys))
    puts = {check_view_key(key, "put"): document for key, document in documents.items()}
    return puts, _check_deletes(keys, puts)


def _documents(put: Any) -> Mapping[Any, Any]:
    if put is None:
        return {}
    if not isinstance(put, Mapping):
        raise InvalidInputError(
            "put", f"must be a mapping of key to document, not {type(put).__name__}"
        )
    return put


def _keys(delete: Any) -> Sequence[Any]:
    if isinstance(delete, str | bytes) or not isinstance(delete, Sequence):
        raise InvalidInputError(
            "delete", f"must be a list or tuple of keys, not {type(delete).__name__}"
        )
    return delete


def _check_document_count(puts: int, deletes: int) -> None:
    """``argument`` is ``put`` when it is over the limit alone, else ``delete``."""
    if puts + deletes <= MAX_PROJECTED_DOCUMENTS:
        return
    raise InvalidInputError(
        "put" if puts > MAX_PROJECTED_DOCUMENTS else "delete",
        f"{puts} documents to put and {deletes} to delete, over the limit of "
        f"{MAX_PROJECTED_DOCUMENTS} per project() (a transaction holds "
        f"{MAX_TRANSACTION_ACTIONS} actions, one is the checkpoint)",
    )


def _check_deletes(keys: Sequence[Any], puts: Mapping[str, Any]) -> list[str]:
    """The keys to delete, each once and none also put (one action per item)."""
    deletes: dict[str, None] = {}
    for index, value in enumerate(keys):
        argument = f"delete[{index}]"
        key = check_view_key(value, argument)
        if key in puts:
            raise InvalidInputError(
                argument, f"key {key!r} is also in put: a transaction writes an item once"
            )
        if key in deletes:
            raise InvalidInputError(
                argument, f"key {key!r} is named twice: a transaction writes an item once"
            )
        deletes[key] = None
    return list(deletes)
