"""S3 claim checks: message bodies too big for SQS and results too big for a DynamoDB item are
stored in a bucket under ``payloads/``.

The bucket's lifecycle rule drops them after 14 days (SQS keeps a message at most that long).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from botocore.exceptions import BotoCoreError, ClientError

from cloudq.errors import ConfigError, DecodeError, PayloadMissing, TransportError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType

    from cloudq.aws import AwsClients

logger = logging.getLogger(__name__)

PAYLOAD_PREFIX = "payloads/"
PAYLOAD_EXPIRY_DAYS = 14
LIFECYCLE_RULE_ID = "cloudq-payloads-expire"
MISSING_BUCKET = frozenset({"NoSuchBucket", "404", "NotFound"})
MISSING_OBJECT = frozenset({"NoSuchKey"})
DENIED = frozenset({"AccessDenied", "403", "Forbidden"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Payloads:
    """Puts and gets message bodies in one S3 bucket."""

    def __init__(self, clients: AwsClients, bucket: str) -> None:
        self._clients = clients
        self.bucket = bucket

    @property
    def _s3(self) -> S3Client:
        return self._clients.s3

    def put(self, key: str, body: str) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body.encode(),
                                ContentType="application/json; charset=utf-8")
        except ClientError as exc:
            raise self._error(exc, key) from exc

    def get(self, key: str) -> str:
        """The body at ``key``. A missing object or bucket is PayloadMissing (poison: it will
        not appear later); anything else (unreachable, throttled, denied) is TransportError,
        which the worker treats as passing."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read().decode()
        except ClientError as exc:
            raise self.read_error(exc, key) from exc
        except BotoCoreError as exc:  # connection refused or reset, timeouts
            raise TransportError(
                f"S3 GetObject of s3://{self.bucket}/{key} failed: {exc}") from exc

    def read_error(self, exc: ClientError, key: str) -> DecodeError | TransportError:
        code = _code(exc)
        where = f"s3://{self.bucket}/{key}"
        if code in MISSING_OBJECT:
            return PayloadMissing(f"payload {where} does not exist (expired or deleted)")
        if code in MISSING_BUCKET:
            return PayloadMissing(f"payload {where} does not exist: no bucket {self.bucket!r}")
        if code in DENIED:
            return TransportError(
                f"S3 GetObject of {where} was denied ({code}): the role needs s3:GetObject on "
                f"{PAYLOAD_PREFIX}* of {self.bucket!r} (without s3:ListBucket, AWS also answers "
                "AccessDenied for an object that does not exist)")
        return TransportError(f"S3 GetObject of {where} failed: {exc}")

    def _error(self, exc: ClientError, key: str) -> ConfigError | TransportError:
        if _code(exc) in MISSING_BUCKET:
            return ConfigError(
                f"S3 bucket {self.bucket!r} does not exist; create it with `cloudq provision`")
        return TransportError(f"S3 {exc.operation_name} of s3://{self.bucket}/{key} failed: {exc}")

    def ensure(self) -> None:
        """Create the bucket if missing and expire ``payloads/`` objects after 14 days."""
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in MISSING_BUCKET:
                raise
            self._create_bucket()
        self._s3.put_bucket_lifecycle_configuration(
            Bucket=self.bucket,
            LifecycleConfiguration={"Rules": [{
                "ID": LIFECYCLE_RULE_ID,
                "Filter": {"Prefix": PAYLOAD_PREFIX},
                "Status": "Enabled",
                "Expiration": {"Days": PAYLOAD_EXPIRY_DAYS},
            }]},
        )

    def _create_bucket(self) -> None:
        region = self._clients.region
        try:
            if region == "us-east-1":  # the one region that refuses a LocationConstraint
                self._s3.create_bucket(Bucket=self.bucket)
            else:
                self._s3.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={
                        "LocationConstraint": cast("BucketLocationConstraintType", region)},
                )
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise
        else:
            logger.info("created S3 bucket %s in %s", self.bucket, region)
