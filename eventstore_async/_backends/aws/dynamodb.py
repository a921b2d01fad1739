"""The DynamoDB (and S3) backend: every DynamoDB request goes out from here, through the
client or its fast path (``wire.py``); S3 object requests go through ``s3.py``."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

import anyio
from botocore.exceptions import ClientError

from ..._capacity import CapacityMeter
from ..._config import StoreConfig
from ..._errors import (
    SCHEMA_MISMATCH,
    TABLE_NOT_ACTIVE,
    UNPROCESSED_KEYS,
    IntegrityError,
    SchemaMissingError,
    StorageError,
    StorageUnavailableError,
    StoreClosedError,
)
from ..._records import (
    ChangeSetRecord,
    CommitPlan,
    CommitRejected,
    HeadRecord,
    Record,
    Rejection,
    SnapshotRecord,
    SortKey,
)
from ..item_sizes import change_set_item_size, companion_items_size
from ..protocol import MalformedItem, Page, ScanPage
from .errors import error_code, translate_errors
from .item_reader import QueryPage, query_page, read_query_page
from .items import head_key, key, record_from_item, transact_items
from .logs import install_redaction
from .s3 import S3Objects
from .session import AwsClients, open_clients
from .wire import FastDynamoDB

__all__ = ["TABLE_KEYS", "DynamoDBBackend"]

#: The table's key schema (README "Schema"): ``pk`` (S) partition key, ``sk`` (N) sort
#: key. ``create_schema`` creates the table with it, on demand (pay per request).
TABLE_KEYS: dict[str, Any] = {
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
    ],
}

_TABLE_READY_TIMEOUT = 120.0
#: Every data-plane request asks for the capacity it consumed (store.metrics, spans).
_TOTAL = "TOTAL"
_BATCH_GET_LIMIT = 100  # keys per BatchGetItem
_UNPROCESSED_ATTEMPTS = 8


class DynamoDBBackend:
    """Stores aggregates in one DynamoDB table (and, later, big payloads in S3)."""

    def __init__(self, config: StoreConfig) -> None:
        self._config = config
        self._table = config.table_name
        #: Units of each answer's ``ConsumedCapacity`` (every request asks for TOTAL).
        self.capacity = CapacityMeter()
        self._stack: AsyncExitStack | None = None
        self._clients: AwsClients | None = None
        self._objects: S3Objects | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pooled clients, with session tokens kept out of botocore's logs."""
        install_redaction()
        stack = AsyncExitStack()
        try:
            self._clients = await open_clients(self._config, stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        install_redaction()  # again: opening the clients created more loggers
        if self._config.bucket_name is not None:
            self._objects = S3Objects(self._clients.s3, self._config.bucket_name)

    @property
    def objects(self) -> S3Objects | None:
        return self._objects

    async def aclose(self) -> None:
        if self._objects is not None:
            self._objects.close()
        stack, self._stack, self._clients, self._objects = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def _dynamodb(self) -> Any:
        if self._clients is None:
            raise StoreClosedError("the store is not open")
        return self._clients.dynamodb

    @property
    def _s3(self) -> Any:
        if self._clients is None:
            raise StoreClosedError("the store is not open")
        return self._clients.s3

    # -- item sizes ---------------------------------------------------------------------

    def change_set_size(self, record: ChangeSetRecord) -> int:
        return change_set_item_size(record)

    def companion_size(
        self, record: ChangeSetRecord, aggregate_type: str | None, feed: bool
    ) -> int:
        return companion_items_size(record, aggregate_type, feed)

    # -- schema -------------------------------------------------------------------------

    async def create_schema(self) -> None:
        await self._create_table()
        await self._wait_table_active()
        if self._config.bucket_name is not None:
            await self._create_bucket(self._config.bucket_name)

    async def _create_table(self) -> None:
        try:
            with translate_errors("CreateTable", table=self._table):
                await self._dynamodb.create_table(
                    TableName=self._table, BillingMode="PAY_PER_REQUEST", **TABLE_KEYS
                )
        except StorageError as exc:
            if exc.code != "ResourceInUseException":  # it exists already
                raise

    async def _wait_table_active(self) -> None:
        delay = 0.05
        with anyio.fail_after(_TABLE_READY_TIMEOUT):
            while True:
                with translate_errors("DescribeTable", table=self._table):
                    described = await self._dynamodb.describe_table(TableName=self._table)
                if described["Table"]["TableStatus"] == "ACTIVE":
                    return
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _create_bucket(self, bucket: str) -> None:
        params: dict[str, Any] = {"Bucket": bucket}
        if self._config.region_name != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._config.region_name}
        try:
            with translate_errors("CreateBucket", bucket=bucket):
                await self._s3.create_bucket(**params)
        except StorageError as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise
        with translate_errors("PutBucketLifecycleConfiguration", bucket=bucket):
            await self._s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration=_lifecycle(self._config.key_prefix)
            )

    async def ping(self) -> None:
        """DescribeTable (active, with the store's keys) and HeadBucket, when configured."""
        with translate_errors("DescribeTable", table=self._table):
            table = (await self._dynamodb.describe_table(TableName=self._table))["Table"]
        _check_table(table)
        bucket = self._config.bucket_name
        if bucket is None:
            return
        try:
            with translate_errors("HeadBucket", bucket=bucket):
                await self._s3.head_bucket(Bucket=bucket)
        except StorageError as exc:
            if exc.code in {"404", "NotFound", "NoSuchBucket"}:  # HEAD answers carry no body
                raise SchemaMissingError.of(
                    "bucket", bucket, code=exc.code, operation="HeadBucket"
                ) from exc
            raise

    async def drop_schema(self) -> None:
        try:
            with translate_errors("DeleteTable", table=self._table):
                await self._dynamodb.delete_table(TableName=self._table)
        except SchemaMissingError:
            pass
        if self._config.bucket_name is not None:
            await self._drop_bucket(self._config.bucket_name)

    async def _drop_bucket(self, bucket: str) -> None:
        try:
            await self._empty_bucket(bucket)
            with translate_errors("DeleteBucket", bucket=bucket):
                await self._s3.delete_bucket(Bucket=bucket)
        except SchemaMissingError:
            pass

    async def _empty_bucket(self, bucket: str) -> None:
        with translate_errors("ListMultipartUploads", bucket=bucket):
            uploads = await self._s3.list_multipart_uploads(Bucket=bucket)
        for upload in uploads.get("Uploads", []):
            with translate_errors("AbortMultipartUpload", bucket=bucket):
                await self._s3.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        params: dict[str, Any] = {"Bucket": bucket}
        while True:
            with translate_errors("ListObjectsV2", bucket=bucket):
                listed = await self._s3.list_objects_v2(**params)
            objects = [{"Key": entry["Key"]} for entry in listed.get("Contents", [])]
            if objects:
                with translate_errors("DeleteObjects", bucket=bucket):
                    await self._s3.delete_objects(
                        Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
                    )
            if not listed.get("IsTruncated"):
                return
            params["ContinuationToken"] = listed["NextContinuationToken"]

    # -- writes -------------------------------------------------------------------------

    async def commit(self, plan: CommitPlan) -> None:
        with translate_errors("TransactWriteItems", table=self._table):
            try:
                response = await self._dynamodb.transact_write_items(
                    TransactItems=transact_items(plan, self._table),
                    ClientRequestToken=plan.token,
                    ReturnConsumedCapacity=_TOTAL,
                )
            except ClientError as exc:
                if error_code(exc) == "TransactionCanceledException":
                    raise _rejection(exc) from exc
                raise
        self.capacity.record(response.get("ConsumedCapacity"), write=True)

    # -- reads --------------------------------------------------------------------------

    async def get(self, partition: str, sort_key: SortKey) -> Record | None:
        return await self._get_item(key(partition, sort_key))  # type: ignore[no-any-return]

    async def get_many(self, keys: list[tuple[str, SortKey]]) -> list[Record | None]:
        # Matched by the number's value: DynamoDB normalises numbers (a snapshot's key
        # 5.6174855710 comes back as 5.617485571), so the text sent is not the text read.
        found: dict[tuple[str, Decimal], Record] = {}
        for start in range(0, len(keys), _BATCH_GET_LIMIT):
            chunk = [key(p, s) for p, s in keys[start : start + _BATCH_GET_LIMIT]]
            for item in await self._batch_get(chunk):
                found[(item["pk"]["S"], Decimal(item["sk"]["N"]))] = record_from_item(item)
        return [found.get((p, Decimal(s))) for p, s in keys]

    async def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """BatchGetItem, consistent, until no key is left unprocessed (with backoff)."""
        items: list[dict[str, Any]] = []
        request = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            with translate_errors("BatchGetItem", table=self._table):
                response = await self._dynamodb.batch_get_item(
                    RequestItems=request, ReturnConsumedCapacity=_TOTAL
                )
            self.capacity.record(response.get("ConsumedCapacity"), write=False)
            items += response.get("Responses", {}).get(self._table, [])
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return items
            await anyio.sleep(min(0.05 * 2**attempt, 1.0))
        raise StorageUnavailableError(
            "keys still unprocessed after retries",
            reason=UNPROCESSED_KEYS,
            operation="BatchGetItem",
        )

    async def scan_partition(self, partition: str, low: SortKey, limit: int) -> list[Record]:
        with translate_errors("Query", table=self._table):
            response = await self._dynamodb.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND sk >= :low",
                ExpressionAttributeValues={":pk": {"S": partition}, ":low": {"N": str(low)}},
                ConsistentRead=True,
                Limit=limit,
                ReturnConsumedCapacity=_TOTAL,
            )
        self.capacity.record(response.get("ConsumedCapacity"), write=False)
        return [record_from_item(item) for item in response.get("Items", [])]

    async def get_head(self, aggregate_id: str) -> HeadRecord | None:
        record = await self._get_item(head_key(aggregate_id))
        return record if isinstance(record, HeadRecord) else None

    async def get_change_set(self, aggregate_id: str, version: int) -> ChangeSetRecord | None:
        record = await self._get_item(key(aggregate_id, version))
        return record if isinstance(record, ChangeSetRecord) else None

    async def _get_item(self, item_key: dict[str, Any]) -> Any:
        with translate_errors("GetItem", table=self._table):
            response = await self._dynamodb.get_item(
                TableName=self._table,
                Key=item_key,
                ConsistentRead=True,
                ReturnConsumedCapacity=_TOTAL,
            )
        self.capacity.record(response.get("ConsumedCapacity"), write=False)
        item = response.get("Item")
        return record_from_item(item) if item else None

    async def referenced_objects(self, aggregate_id: str) -> set[str]:
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk >= :one",
            "FilterExpression": "attribute_exists(s3_key)",
            "ProjectionExpression": "s3_key",
            "ExpressionAttributeValues": {":pk": {"S": aggregate_id}, ":one": {"N": "1"}},
            "ConsistentRead": True,
            "ReturnConsumedCapacity": _TOTAL,
        }
        keys: set[str] = set()
        while True:
            with translate_errors("Query", table=self._table):
                response = await self._dynamodb.query(**params)
            self.capacity.record(response.get("ConsumedCapacity"), write=False)
            keys.update(item["s3_key"]["S"] for item in response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                return keys
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def scan(self, *, kind: str | None = None) -> AsyncGenerator[ScanPage, None]:
        params: dict[str, Any] = {
            "TableName": self._table,
            "ConsistentRead": True,
            "ReturnConsumedCapacity": _TOTAL,
        }
        if kind is not None:  # still reads (and pays for) the whole table
            params["FilterExpression"] = "#k = :kind"
            params["ExpressionAttributeNames"] = {"#k": "kind"}
            params["ExpressionAttributeValues"] = {":kind": {"S": kind}}
        while True:
            with translate_errors("Scan", table=self._table):
                response = await self._dynamodb.scan(**params)
            self.capacity.record(response.get("ConsumedCapacity"), write=False)
            yield [_scanned(item) for item in response.get("Items", [])]
            if not response.get("LastEvaluatedKey"):
                return
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def query(
        self,
        aggregate_id: str,
        low: SortKey,
        high: SortKey | None,
        *,
        with_snapshots: bool = False,
    ) -> AsyncGenerator[Page, None]:
        params = self._query_params(aggregate_id, low, high, with_snapshots)
        while True:
            with translate_errors("Query", table=self._table):
                page = await self._query_page(params)
            self.capacity.record({"CapacityUnits": page.capacity}, write=False)
            yield [r for r in page.records if isinstance(r, _PAGE_RECORDS)]
            if page.last_key is None:
                return
            params["ExclusiveStartKey"] = page.last_key

    async def _query_page(self, params: dict[str, Any]) -> QueryPage:
        """One Query; on the fast path its answer goes from JSON to records directly."""
        client = self._dynamodb
        if isinstance(client, FastDynamoDB):
            answer = await client.read("Query", params, read_query_page)
            return answer if isinstance(answer, QueryPage) else query_page(answer)
        return query_page(await client.query(**params))

    def _query_params(
        self, aggregate_id: str, low: SortKey, high: SortKey | None, with_snapshots: bool
    ) -> dict[str, Any]:
        values: dict[str, Any] = {":pk": {"S": aggregate_id}, ":low": {"N": str(low)}}
        condition = "pk = :pk AND sk >= :low"
        if high is not None:
            values[":high"] = {"N": str(high)}
            condition = "pk = :pk AND sk BETWEEN :low AND :high"
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
            "ReturnConsumedCapacity": _TOTAL,
        }
        if not with_snapshots:  # snapshots sit between change sets; histories skip them
            params["FilterExpression"] = "attribute_not_exists(snap_schema)"
        if self._config.page_size is not None:
            params["Limit"] = self._config.page_size
        return params


_PAGE_RECORDS = (HeadRecord, ChangeSetRecord, SnapshotRecord)


def _scanned(item: dict[str, Any]) -> Record | MalformedItem:
    try:
        return record_from_item(item)
    except IntegrityError as exc:
        partition = str(item.get("pk", {}).get("S", "?"))
        return MalformedItem(partition, str(item.get("sk", {}).get("N", "?")), str(exc))


def _rejection(exc: ClientError) -> CommitRejected:
    """Line the cancellation reasons up with the plan's writes."""
    reasons: list[Rejection | None] = []
    for reason in exc.response.get("CancellationReasons", []):
        code = reason.get("Code", "None")
        if code == "None":
            reasons.append(None)
            continue
        item = reason.get("Item")
        reasons.append(Rejection(code=code, old=record_from_item(item) if item else None))
    return CommitRejected(reasons)


def _check_table(table: dict[str, Any]) -> None:
    """A table that is not active, or keyed otherwise than the store's, is refused."""
    name = table.get("TableName")
    keys = sorted((k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", []))
    wanted = sorted((k["AttributeName"], k["KeyType"]) for k in TABLE_KEYS["KeySchema"])
    if keys != wanted:
        raise StorageError(
            f"table {name!r} has the key schema {keys}, not the event store's {wanted}",
            reason=SCHEMA_MISMATCH,
            operation="DescribeTable",
        )
    status = table.get("TableStatus")
    if status != "ACTIVE":
        raise StorageUnavailableError(
            f"table {name!r} is {status}, not ACTIVE",
            reason=TABLE_NOT_ACTIVE,
            operation="DescribeTable",
        )


def _lifecycle(prefix: str) -> dict[str, Any]:
    """Incomplete multipart uploads (a crashed writer's) are removed after a day."""
    return {
        "Rules": [
            {
                "ID": "eventstore-abort-incomplete-uploads",
                "Filter": {"Prefix": prefix},
                "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            }
        ]
    }
