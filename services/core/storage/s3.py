"""The S3 backend of the storage edge (boto3; any S3-compatible server).

Outputs go up as multipart uploads, part by part from the local file, so a
worker never holds a whole rendition in memory, and readers see an object only
once CompleteMultipartUpload has made it whole. A run that stops (cancel, a
failure, a stale attempt) aborts its upload: no partial object, no dangling
upload. The SHA-256 of the bytes travels as object metadata and in the result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from renderfarm.core.storage.config import StorageSettings
from renderfarm.core.storage.errors import StorageError, Stopped
from renderfarm.core.storage.keys import ObjectRef

_CHUNK = 1 << 20
_MISSING = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
           "AuthorizationHeaderMalformed"}
_BUSY = {"500", "502", "503", "504", "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}


@dataclass(frozen=True)
class ObjectInfo:
    size_bytes: int
    etag: str
    media_type: str | None = None
    checksum: str | None = None  # "sha256:<hex>" when we wrote it


def _never() -> bool:
    return False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def storage_error(exc: Exception, what: str, ref: ObjectRef | None = None) -> StorageError:
    """A boto error as a StorageError whose message says what to fix, without secrets."""
    where = ref.uri if ref else what
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NO_BUCKET:
            return StorageError("no_bucket", f"{what}: bucket {ref.bucket if ref else ''!r} does not exist")
        if code in _MISSING or (status == "404" and not code):
            return StorageError("missing", f"{what}: {where} does not exist")
        if code in _DENIED or status == "403":
            return StorageError("denied", f"{what}: access to {where} denied ({code or status}); "
                                          "check the S3 credentials and the bucket policy")
        if code in _BUSY or status.startswith("5"):
            return StorageError("unavailable", f"{what}: the S3 server answered {code or status}")
        return StorageError("failed", f"{what}: {code or status} for {where}")
    if isinstance(exc, (EndpointConnectionError, BotoCoreError)):
        return StorageError("unavailable", f"{what}: S3 endpoint not reachable: {type(exc).__name__}")
    return StorageError("failed", f"{what}: {type(exc).__name__}")


class S3Storage:
    def __init__(self, settings: StorageSettings):
        self.settings = settings
        key_id = settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        self.client = self._client(settings.s3_endpoint, key_id, secret)
        # A presigned URL names its host in the signature: sign for the host clients use.
        public = settings.s3_public_endpoint
        self.signer = self._client(public, key_id, secret) if public and public != settings.s3_endpoint else self.client

    def _client(self, endpoint: str, key_id: str | None, secret: str | None):
        settings = self.settings
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=settings.s3_region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if settings.s3_path_style else "virtual"},
                connect_timeout=settings.s3_connect_timeout_s,
                read_timeout=settings.s3_read_timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
                # Only compute checksums where S3 requires them: not every S3-compatible
                # server accepts the newer default trailing checksums.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    # --- reading -----------------------------------------------------------------------

    def head(self, ref: ObjectRef) -> ObjectInfo | None:
        """The object's size and type, or None when it does not exist."""
        try:
            answer = self.client.head_object(Bucket=ref.bucket, Key=ref.key)
        except Exception as exc:
            error = storage_error(exc, "HEAD", ref)
            if error.reason == "missing":
                return None
            raise error from None
        return ObjectInfo(size_bytes=int(answer["ContentLength"]), etag=answer.get("ETag", "").strip('"'),
                          media_type=answer.get("ContentType"), checksum=answer.get("Metadata", {}).get("sha256"))

    def download(self, ref: ObjectRef, target: Path, *, limit: int, should_stop: Callable[[], bool] = _never) -> Path:
        """Stream ``ref`` into ``target``; nothing is left at ``target`` unless it all arrived."""
        try:
            try:
                answer = self.client.get_object(Bucket=ref.bucket, Key=ref.key)
            except Exception as exc:
                raise storage_error(exc, "input download", ref) from None
            declared = int(answer.get("ContentLength") or 0)
            if declared > limit:
                answer["Body"].close()
                raise StorageError("too_large", f"input is {declared} bytes; the limit is {limit}")
            written = 0
            try:
                with open(target, "wb") as out:
                    for chunk in answer["Body"].iter_chunks(_CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise StorageError("too_large", f"input exceeds the limit of {limit} bytes")
                        if should_stop():
                            raise Stopped()
                        out.write(chunk)
            except (BotoCoreError, OSError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                    raise
                raise storage_error(exc, "input download", ref) from None
            finally:
                answer["Body"].close()
            if written != declared:
                raise StorageError("unavailable", f"input download ended after {written} of {declared} bytes")
            return target
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    # --- writing -----------------------------------------------------------------------

    def upload(self, source: Path, ref: ObjectRef, *, media_type: str | None = None,
               should_stop: Callable[[], bool] = _never) -> ObjectInfo:
        """Multipart upload of ``source`` to ``ref``; aborted (nothing visible, nothing
        dangling) if ``should_stop`` turns true or anything fails on the way."""
        # The checksum goes into the object's metadata, which S3 takes only when the
        # upload starts: one read pass over the local file first (page-cache warm).
        checksum = f"sha256:{file_sha256(source)}"
        extra: dict = {"Metadata": {"sha256": checksum}}
        if media_type:
            extra["ContentType"] = media_type
        part_size = self.settings.s3_part_size_bytes
        try:
            upload_id = self.client.create_multipart_upload(Bucket=ref.bucket, Key=ref.key, **extra)["UploadId"]
        except Exception as exc:
            raise storage_error(exc, "output upload", ref) from None
        try:
            parts, size, number = [], 0, 1
            with open(source, "rb") as handle:
                while True:
                    if should_stop():
                        raise Stopped()
                    body = handle.read(part_size)
                    if not body and number > 1:
                        break
                    size += len(body)
                    answer = self.client.upload_part(Bucket=ref.bucket, Key=ref.key, UploadId=upload_id,
                                                     PartNumber=number, Body=body)
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
                    if len(body) < part_size:
                        break
            if should_stop():
                raise Stopped()
            done = self.client.complete_multipart_upload(Bucket=ref.bucket, Key=ref.key, UploadId=upload_id,
                                                         MultipartUpload={"Parts": parts})
        except BaseException as exc:
            self._abort(ref, upload_id)
            if isinstance(exc, (ClientError, BotoCoreError)):
                raise storage_error(exc, "output upload", ref) from None
            raise
        return ObjectInfo(size_bytes=size, etag=str(done.get("ETag", "")).strip('"'), media_type=media_type,
                          checksum=checksum)

    def _abort(self, ref: ObjectRef, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=ref.bucket, Key=ref.key, UploadId=upload_id)
        except Exception:  # the bucket's abort-incomplete lifecycle (or the expiry sweep) catches what is left
            pass

    # --- signing -----------------------------------------------------------------------

    def presign_get(self, ref: ObjectRef, ttl_s: int | None = None, filename: str | None = None
                    ) -> tuple[str, datetime]:
        ttl = ttl_s or self.settings.s3_presign_ttl_s
        params: dict = {"Bucket": ref.bucket, "Key": ref.key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url = self.signer.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl)
        return url, datetime.now(timezone.utc) + timedelta(seconds=ttl)

    def presign_put(self, ref: ObjectRef, ttl_s: int | None = None, media_type: str | None = None
                    ) -> tuple[str, datetime, dict[str, str]]:
        """A URL that accepts one PUT of the object; returns the headers the PUT must send."""
        ttl = ttl_s or self.settings.s3_presign_ttl_s
        params: dict = {"Bucket": ref.bucket, "Key": ref.key}
        headers: dict[str, str] = {}
        if media_type:
            params["ContentType"] = media_type
            headers["Content-Type"] = media_type
        url = self.signer.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl)
        return url, datetime.now(timezone.utc) + timedelta(seconds=ttl), headers

    # --- removing ----------------------------------------------------------------------

    def delete(self, ref: ObjectRef) -> None:
        try:
            self.client.delete_object(Bucket=ref.bucket, Key=ref.key)
        except Exception as exc:
            raise storage_error(exc, "delete", ref) from None

    def delete_if_etag(self, uri: str, etag: str) -> None:
        """Delete an output this run wrote unless a later attempt replaced it since
        (best effort: the check and the delete are two requests)."""
        from renderfarm.core.storage.keys import parse_s3_uri

        ref = parse_s3_uri(uri)
        try:
            info = self.head(ref)
            if info is not None and info.etag == etag:
                self.delete(ref)
        except StorageError:
            pass

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix`` and abort its unfinished uploads."""
        removed = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    removed += len(keys)
            for upload in self.multipart_uploads(bucket, prefix):
                self._abort(ObjectRef(bucket, upload["Key"]), upload["UploadId"])
        except StorageError:
            raise
        except Exception as exc:
            raise storage_error(exc, "delete", ObjectRef(bucket, prefix)) from None
        return removed

    def multipart_uploads(self, bucket: str, prefix: str) -> list[dict]:
        try:
            answer = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        except Exception as exc:
            raise storage_error(exc, "list uploads", ObjectRef(bucket, prefix)) from None
        return list(answer.get("Uploads", []))

    def child_prefixes(self, bucket: str, prefix: str) -> Iterator[str]:
        """The "folders" right under ``prefix`` (tenants, or a tenant's jobs), page by page."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for item in page.get("CommonPrefixes", []):
                    yield item["Prefix"]
        except (ClientError, BotoCoreError) as exc:
            raise storage_error(exc, "list", ObjectRef(bucket, prefix)) from None

    def check_bucket(self, bucket: str) -> None:
        """Raise a StorageError that says what is wrong when the bucket cannot be used."""
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            error = storage_error(exc, "bucket check", ObjectRef(bucket, ""))
            if error.reason == "missing":
                error = StorageError("no_bucket", f"bucket check: bucket {bucket!r} does not exist")
            raise error from None
