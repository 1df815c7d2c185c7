"""``revoke(terminate=True)`` against a real ``cloudq poll --pool processes`` and moto server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cloudq
from cloudq.localaws import LocalAws
from tests.integration.apps import e2e
from tests.integration.e2e_harness import Harness, harness, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def h(local_aws: LocalAws, unique_prefix: str, tmp_path: Path) -> Iterator[Harness]:
    yield from harness(e2e.app, local_aws, unique_prefix, tmp_path)


def test_a_running_task_revoked_with_terminate_stops_within_seconds(h: Harness) -> None:
    h.start_worker("--pool", "processes", "-c", "1",
                   extra_env={"CLOUDQ_WORKER_REVOKE_CHECK_INTERVAL": "0.5"})
    result = e2e.slow.delay("long", 30)
    wait_for(lambda: h.marks("long.started"), timeout_s=20, what="the task to start")

    result.revoke(terminate=True)
    revoked_at = time.monotonic()

    wait_for(lambda: e2e.app.backend.get(result.id).extra.get("reason") == "terminated",
             timeout_s=10, what="the worker to record the termination")
    assert time.monotonic() - revoked_at < 5
    assert result.state == "REVOKED"
    with pytest.raises(cloudq.TaskRevokedError, match="terminated"):
        result.get(timeout=1)
    assert e2e.add.delay(2, 3).get(timeout=15) == 5  # the only child slot is free again
    wait_for(lambda: sum(h.queue_counts().values()) == 0, what="the message to be deleted")
    time.sleep(1)
    assert h.marks("long.done") == []
    assert "revoked with terminate=True" in h.log()
