"""The LocalStack tier: skipped unless ``CLOUDQ_LOCALSTACK_URL`` names a running LocalStack.

    docker compose -f localstack/docker-compose.yml up -d
    CLOUDQ_LOCALSTACK_URL=http://localhost:4566 pytest tests/localstack
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

import cloudq
from cloudq.provision import provision

URL = os.environ.get("CLOUDQ_LOCALSTACK_URL")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/localstack" in str(item.fspath):
            item.add_marker(pytest.mark.localstack)
            if not URL:
                item.add_marker(pytest.mark.skip(reason="CLOUDQ_LOCALSTACK_URL is not set"))


@pytest.fixture
def ls_app() -> Iterator[cloudq.App]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    unique = f"ls{uuid.uuid4().hex[:8]}"
    app = cloudq.App("ls", set_as_current=False, endpoint_url=URL, queue_prefix=f"{unique}-",
                     result_table=f"{unique}-results", payload_bucket=f"{unique}-payloads",
                     worker_poll_wait=1)
    provision(app)
    yield app
    app.close()
