"""What the emulator changes in moto's DynamoDB, and the check that moto is one we tested.

Imported only inside the emulator subprocess (it imports moto). Every request runs under
the server's one global lock (``_server.SerializedWSGIApp``), which is what makes each
change below safe: nothing else touches the backends while a request runs.

- **Transaction rollback by undo record.** moto's ``TransactWriteItems`` deep-copies
  every table it touches before applying the actions, to put the copy back if one
  fails: its cost grows with the table (seconds per transaction at 50,000 items). Here
  the table is not copied; instead the items the transaction names (and the length of
  the table's stream) are recorded before it runs and put back if it raises.
- **Query by partition.** moto's ``Query`` on a table walks every item of the table to
  find the partition's; here it is given only the partition's items (moto keeps items
  keyed by partition key already). Queries on an index keep moto's path.
- **Item size as DynamoDB counts it** (``_sizes``), with DynamoDB's limit of 409,600
  bytes instead of moto's 405,000 and its per-character count of numbers.
- **TransactWriteItems requests**: DynamoDB's 100-action and 4 MB limits
  (``ValidationException`` as DynamoDB words them) and ``ClientRequestToken``
  idempotency (``_tokens``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

from eventstore_async.emulator._sizes import (
    ITEM_SIZE_LIMIT,
    TRANSACTION_ACTIONS_LIMIT,
    TRANSACTION_SIZE_LIMIT,
    item_size,
    transaction_size,
)
from eventstore_async.emulator._tokens import RequestTokens, parameters_digest

#: moto releases these changes were tested with; the ``emulator`` extra pins them.
TESTED_MOTO_VERSIONS = ("5.2.5",)

_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"


class UntestedMotoError(RuntimeError):
    """The installed moto is not one the emulator's changes were tested with."""


def check_moto_version(installed: str | None = None) -> str:
    """Return moto's version; raise UntestedMotoError if it is not a tested one."""
    version = installed if installed is not None else metadata.version("moto")
    if version not in TESTED_MOTO_VERSIONS:
        tested = ", ".join(TESTED_MOTO_VERSIONS)
        raise UntestedMotoError(
            f"the emulator changes moto's internals and was tested with moto {tested} only, "
            f"but moto {version} is installed; refusing to run rather than emulate DynamoDB "
            f"wrongly. Install a tested one: pip install 'moto[server]=={TESTED_MOTO_VERSIONS[-1]}'"
        )
    return version


def apply_patches(tokens: RequestTokens) -> None:
    """Check moto's version, then install every change listed in the module docstring.

    Raises UntestedMotoError (before changing anything) on an untested moto.
    """
    check_moto_version()
    _patch_transaction_rollback()
    _patch_partition_query()
    _patch_item_size()
    _patch_transaction_requests(tokens)


# -- transaction rollback -------------------------------------------------------------


class _CopyWithoutTables:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``.

    The only deep copy of a whole table there is the transaction's backup; returning
    the table itself makes that backup (and its "restore") free. The undo record of
    :func:`_patch_transaction_rollback` does the rolling back instead.
    """

    def __init__(self, table_type: type[Any]) -> None:
        self._table_type = table_type
        self.copy = copy.copy

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)


class _UndoRecord:
    """The items a transaction names, as they were, and each table's stream length."""

    def __init__(self) -> None:
        # (table, partition key, sort key or None, partition existed, old item or None)
        self._items: list[tuple[Any, Any, Any, bool, Any]] = []
        self._streams: dict[int, tuple[Any, int]] = {}

    @classmethod
    def capture(cls, tables: Mapping[Any, Any], actions: Iterable[Mapping[str, Any]]) -> Any:
        record = cls()
        for action in actions:
            for kind, body in action.items():
                table = tables.get(body.get("TableName")) if isinstance(body, Mapping) else None
                if table is not None:
                    record._remember(table, body.get("Item" if kind == "Put" else "Key"))
        return record

    def _remember(self, table: Any, key: Any) -> None:
        from moto.dynamodb.models.dynamo_type import DynamoType

        if not isinstance(key, Mapping) or table.hash_key_attr not in key:
            return  # moto refuses it before writing anything
        range_attr = table.range_key_attr
        if range_attr is not None and range_attr not in key:
            return
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = None if range_attr is None else DynamoType(key[range_attr])
        partition = table.items.get(hash_key)
        if range_key is None:
            old = partition
        else:
            old = None if partition is None else partition.get(range_key)
        self._items.append((table, hash_key, range_key, partition is not None, copy.deepcopy(old)))
        shard = table.stream_shard
        if shard is not None and id(table) not in self._streams:
            self._streams[id(table)] = (table, len(shard.items))

    def restore(self) -> None:
        """Put every recorded item back as it was (absent ones removed)."""
        for table, hash_key, range_key, existed, old in reversed(self._items):
            if range_key is None:
                if old is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = old
                continue
            partition = table.items[hash_key]
            if old is None:
                partition.pop(range_key, None)
                if not partition and not existed:
                    del table.items[hash_key]
            else:
                partition[range_key] = old
        for table, length in self._streams.values():
            del table.stream_shard.items[length:]


def _patch_transaction_rollback() -> None:
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    backend_type: Any = models.DynamoDBBackend
    original: Callable[..., None] = backend_type.transact_write_items
    setattr(models, "copy", _CopyWithoutTables(Table))  # noqa: B010 - a module global

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        undo = _UndoRecord.capture(self.tables, transact_items)
        try:
            original(self, transact_items)
        except BaseException:
            undo.restore()
            raise

    backend_type.transact_write_items = transact_write_items


# -- query by partition ---------------------------------------------------------------


def _patch_partition_query() -> None:
    from moto.dynamodb.models.table import Table

    table_type: Any = Table
    original: Callable[..., Any] = table_type.query
    signature = inspect.signature(original)

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, *args, **kwargs).arguments
        hash_key = arguments.get("hash_key")
        if arguments.get("index_name") or hash_key is None:
            return original(self, *args, **kwargs)
        items = _partition_items(self, hash_key)
        # moto's query finds the partition by filtering all_items(); under the global
        # lock, an instance attribute can stand in for the method for this one call.
        self.all_items = lambda: items
        try:
            return original(self, *args, **kwargs)
        finally:
            del self.all_items

    table_type.query = query


def _partition_items(table: Any, hash_key: Any) -> list[Any]:
    partition = table.items.get(hash_key)  # .get: the defaultdict must not grow
    if partition is None:
        return []
    if table.range_key_attr is None:
        return [partition]
    return list(partition.values())


# -- item size ------------------------------------------------------------------------


def _patch_item_size() -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    def __setitem__(self: dict[str, Any], key: str, value: Any) -> None:
        others = ((k, v) for k, v in self.items() if k != key)
        if item_size(others) + item_size([(key, value)]) > ITEM_SIZE_LIMIT:
            raise ItemSizeTooLarge
        dict.__setitem__(self, key, value)

    limited: Any = LimitedSizeDict
    limited.__setitem__ = __setitem__


# -- TransactWriteItems requests ------------------------------------------------------


def _patch_transaction_requests(tokens: RequestTokens) -> None:
    from moto.core.responses import ActionResult
    from moto.dynamodb.exceptions import DynamodbException, MockValidationException
    from moto.dynamodb.responses import DynamoHandler

    handler_type: Any = DynamoHandler
    original: Callable[..., Any] = handler_type.transact_write_items

    def transact_write_items(self: Any) -> Any:
        params: dict[str, Any] = self.body
        actions = params.get("TransactItems") or []
        problem = transaction_limit_problem(actions)
        if problem is not None:
            raise MockValidationException(problem)
        token = params.get("ClientRequestToken")
        if not isinstance(token, str):
            return original(self)
        digest = parameters_digest(params)
        verdict = tokens.check(token, digest)
        if verdict == "mismatch":
            raise DynamodbException(
                _ERROR_PREFIX + "IdempotentParameterMismatchException",
                "The request uses the same client token as a previous, but non-identical request.",
            )
        if verdict == "replay":
            return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
        result = original(self)
        tokens.remember(token, digest)
        return result

    handler_type.transact_write_items = transact_write_items


def transaction_limit_problem(actions: list[Mapping[str, Any]]) -> str | None:
    """DynamoDB's words for a transaction over 100 actions or 4 MB, or None."""
    if len(actions) > TRANSACTION_ACTIONS_LIMIT:
        values = ", ".join(
            f"com.amazonaws.dynamodb.v20120810.TransactWriteItem@{0x10000000 + n:x}"
            for n in range(len(actions))
        )
        return (
            f"1 validation error detected: Value '[{values}]' at 'transactItems' failed to "
            "satisfy constraint: Member must have length less than or equal to "
            f"{TRANSACTION_ACTIONS_LIMIT}"
        )
    if transaction_size(actions) > TRANSACTION_SIZE_LIMIT:
        return "Transaction request cannot be larger than 4 MB"
    return None
