"""Fixtures for tests against a moto server over real HTTP.

One server serves the whole session and is never reset: every test names its own queues,
tables and buckets with ``unique_prefix`` instead, so tests that run subprocesses against the
server cannot lose their state to another test.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

import cloudq
from cloudq.aws import AwsClients, RequestCounter
from cloudq.localaws import LocalAws
from cloudq.runners.lambda_runner import LambdaHandler


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    aws = LocalAws().start()
    yield aws
    aws.stop()


@pytest.fixture
def aws_clients(local_aws: LocalAws) -> Iterator[AwsClients]:
    yield AwsClients(region="us-east-1", endpoint_url=local_aws.endpoint_url)


@pytest.fixture
def unique_prefix() -> str:
    """A fresh name prefix (queues, tables, buckets) for one test."""
    return f"t{uuid4().hex[:8]}-"


# The two below use the test module's own ``app`` fixture (an app on fresh queues).
@pytest.fixture
def handler(app: cloudq.App) -> LambdaHandler:
    return app.lambda_handler()


@pytest.fixture
def aws_calls(app: cloudq.App) -> RequestCounter:
    """Every SQS and DynamoDB call the app makes from now on (until its settings change)."""
    counter = RequestCounter()
    counter.attach(app.aws.sqs)
    counter.attach(app.aws.dynamodb)
    return counter
