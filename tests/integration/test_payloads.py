"""S3 claim-check payloads against moto's S3."""

from __future__ import annotations

import pytest

from cloudq.aws import AwsClients
from cloudq.errors import ConfigError, DecodeError
from cloudq.localaws import LocalAws
from cloudq.payloads import PAYLOAD_EXPIRY_DAYS, PAYLOAD_PREFIX, S3Payloads

pytestmark = pytest.mark.integration


@pytest.fixture
def payloads(aws_clients: AwsClients, unique_prefix: str) -> S3Payloads:
    bucket = S3Payloads(aws_clients, f"{unique_prefix}payloads")
    bucket.ensure()
    return bucket


def test_put_then_get_round_trips_the_body(payloads: S3Payloads) -> None:
    body = '{"v": 1, "args": ["' + "é" * 300_000 + '"]}'

    payloads.put("payloads/task-1/a.json", body)

    assert payloads.get("payloads/task-1/a.json") == body


def test_a_missing_key_is_a_decode_error_naming_bucket_and_key(payloads: S3Payloads) -> None:
    with pytest.raises(DecodeError) as raised:
        payloads.get("payloads/gone.json")

    assert payloads.bucket in str(raised.value)
    assert "payloads/gone.json" in str(raised.value)


def test_a_missing_bucket_is_a_config_error(aws_clients: AwsClients, unique_prefix: str) -> None:
    payloads = S3Payloads(aws_clients, f"{unique_prefix}never-made")

    with pytest.raises(ConfigError, match="cloudq provision"):
        payloads.put("payloads/x.json", "{}")


def test_ensure_is_idempotent_and_sets_the_expiry_rule(
    payloads: S3Payloads, aws_clients: AwsClients
) -> None:
    payloads.ensure()

    rules = aws_clients.s3.get_bucket_lifecycle_configuration(Bucket=payloads.bucket)["Rules"]
    assert [(r["Filter"].get("Prefix"), r["Expiration"].get("Days"), r["Status"])
            for r in rules] == [(PAYLOAD_PREFIX, PAYLOAD_EXPIRY_DAYS, "Enabled")]


def test_ensure_outside_us_east_1_gives_a_location_constraint(
    local_aws: LocalAws, unique_prefix: str
) -> None:
    clients = AwsClients(region="eu-west-1", endpoint_url=local_aws.endpoint_url)
    payloads = S3Payloads(clients, f"{unique_prefix}eu")

    payloads.ensure()

    location = clients.s3.get_bucket_location(Bucket=payloads.bucket)["LocationConstraint"]
    assert location == "eu-west-1"
