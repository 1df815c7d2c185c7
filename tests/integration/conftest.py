"""Fixtures for tests against a moto server over real HTTP.

One server serves the whole session and is never reset: every test names its own queues,
tables and buckets with ``unique_prefix`` instead, so tests that run subprocesses against the
server cannot lose their state to another test.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from cloudq.aws import AwsClients
from cloudq.localaws import LocalAws


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
