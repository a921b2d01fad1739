"""S3 behind the :class:`ObjectStore` protocol: offloaded payloads in one bucket."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from typing import Any

from ..._errors import StorageError, StorageUnavailableError, StoreClosedError
from ..protocol import ObjectInfo, UploadInfo
from .errors import translate_errors

__all__ = ["S3Objects", "multipart_etag"]

_READ_CHUNK = 1024 * 1024


def multipart_etag(part_etags: list[str]) -> str:
    """S3's ETag of a completed multipart object: MD5 of the parts' MD5s, and their count."""
    digests = b"".join(bytes.fromhex(etag.strip('"')) for etag in part_etags)
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(part_etags)}"


class S3Objects:
    """:class:`ObjectStore` on one S3 bucket."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client: Any = client
        self._bucket = bucket

    @property
    def _s3(self) -> Any:
        """The client, until :meth:`close`: a closed aiobotocore client would open a new
        HTTP session that nobody closes, and write after the store said it was closed."""
        if self._client is None:
            raise StoreClosedError("the store is closed; no S3 request is sent")
        return self._client

    def close(self) -> None:
        """Refuse every later request (the store is closing its clients)."""
        self._client = None

    async def put(self, key: str, body: bytes) -> None:
        try:
            with translate_errors("PutObject", bucket=self._bucket):
                await self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, IfNoneMatch="*")
        except StorageError as exc:
            expected = hashlib.md5(body, usedforsecurity=False).hexdigest()
            if not await self._written_by_us(exc, key, expected):
                raise

    async def start_multipart(self, key: str) -> str:
        with translate_errors("CreateMultipartUpload", bucket=self._bucket):
            response = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=key)
        return str(response["UploadId"])

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        with translate_errors("UploadPart", bucket=self._bucket):
            response = await self._s3.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        return str(response["ETag"])

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
        try:
            with translate_errors("CompleteMultipartUpload", bucket=self._bucket):
                await self._s3.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                )
        except StorageError as exc:
            if not await self._written_by_us(exc, key, multipart_etag(etags)):
                raise

    async def _written_by_us(self, exc: StorageError, key: str, etag: str) -> bool:
        """After a lost response botocore re-sends the write, which the condition then
        refuses (412; for a completed upload, 404 NoSuchUpload). Keys are random, so an
        object with our ETag there is our own first attempt: the write succeeded.

        Raises:
            StorageUnavailableError: the object could not be read to tell (reason
                ``UnconfirmedWrite``): a refusal of our own re-send is not final.
        """
        if exc.code not in {"PreconditionFailed", "412", "NoSuchUpload"}:
            return False
        try:
            with translate_errors("HeadObject", bucket=self._bucket):
                head = await self._s3.head_object(Bucket=self._bucket, Key=key)
        except StorageError as head_failed:
            raise StorageUnavailableError(
                f"a re-sent write of {key!r} was refused ({exc.code}) and reading the object "
                f"back to recognise our own first attempt failed ({head_failed})",
                reason="UnconfirmedWrite",
                operation=exc.operation,
            ) from head_failed
        return str(head.get("ETag", "")).strip('"') == etag

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        with translate_errors("AbortMultipartUpload", bucket=self._bucket):
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)

    async def get(self, key: str) -> AsyncGenerator[bytes, None]:
        with translate_errors("GetObject", bucket=self._bucket):
            response = await self._s3.get_object(Bucket=self._bucket, Key=key)
        body = response["Body"]
        try:
            while True:
                with translate_errors("GetObject", bucket=self._bucket):
                    chunk = await body.read(_READ_CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        with translate_errors("DeleteObject", bucket=self._bucket):
            await self._s3.delete_object(Bucket=self._bucket, Key=key)

    async def list(self, prefix: str) -> AsyncGenerator[ObjectInfo, None]:
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        while True:
            with translate_errors("ListObjectsV2", bucket=self._bucket):
                listed = await self._s3.list_objects_v2(**params)
            for entry in listed.get("Contents", []):
                yield ObjectInfo(entry["Key"], int(entry["Size"]), entry["LastModified"])
            if not listed.get("IsTruncated"):
                return
            params["ContinuationToken"] = listed["NextContinuationToken"]

    async def list_uploads(self, prefix: str) -> AsyncGenerator[UploadInfo, None]:
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        while True:
            with translate_errors("ListMultipartUploads", bucket=self._bucket):
                listed = await self._s3.list_multipart_uploads(**params)
            for entry in listed.get("Uploads", []):
                yield UploadInfo(entry["Key"], entry["UploadId"], entry["Initiated"])
            if not listed.get("IsTruncated"):
                return
            params["KeyMarker"] = listed["NextKeyMarker"]
            params["UploadIdMarker"] = listed["NextUploadIdMarker"]
