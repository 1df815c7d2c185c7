"""S3 claim checks: message bodies too big for SQS are stored in a bucket under ``payloads/``.

The bucket's lifecycle rule drops them after 14 days (SQS keeps a message at most that long).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from botocore.exceptions import ClientError

from cloudq.errors import ConfigError, DecodeError, TransportError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType

    from cloudq.aws import AwsClients

logger = logging.getLogger(__name__)

PAYLOAD_PREFIX = "payloads/"
PAYLOAD_EXPIRY_DAYS = 14
LIFECYCLE_RULE_ID = "cloudq-payloads-expire"
MISSING_BUCKET = frozenset({"NoSuchBucket", "404", "NotFound"})


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
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) == "NoSuchKey":
                raise DecodeError(
                    f"message payload s3://{self.bucket}/{key} does not exist (expired or deleted)"
                ) from exc
            raise self._error(exc, key) from exc
        return response["Body"].read().decode()

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
