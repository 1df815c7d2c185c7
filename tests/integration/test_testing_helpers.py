"""cloudq.testing, used the way an app's own test suite would use it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import cloudq
from cloudq.runners.poller import Poller
from cloudq.testing import BurstWorker, TaskFailed, use_memory

app = cloudq.App("helpers", set_as_current=False)


@app.task
def greet(name: str) -> str:
    return f"hello {name}"


@app.task
def explode() -> None:
    raise RuntimeError("boom")


@pytest.fixture
def cloudq_app() -> Iterator[cloudq.App]:
    yield app


def test_use_memory_and_burst_worker_run_tasks_without_aws() -> None:
    with use_memory(app) as (transport, _store):
        result = greet.delay("ada")
        handled = BurstWorker(app).join(fail_fast=True)

        assert result.get(timeout=1) == "hello ada"
        assert [d.outcome.value for d in handled] == ["success"]
        assert ("SendMessage", "default") in transport.calls


def test_burst_worker_fail_fast_names_the_failed_task() -> None:
    with use_memory(app):
        explode.delay()

        with pytest.raises(TaskFailed, match=r"helpers\.explode|explode\["):
            BurstWorker(app).join(fail_fast=True)


@pytest.mark.integration
def test_cloudq_aws_app_fixture_gives_a_provisioned_app_on_moto(cloudq_aws_app: cloudq.App) -> None:
    assert cloudq_aws_app.settings.endpoint_url is not None
    result = greet.delay("grace")

    assert Poller(cloudq_aws_app, burst=True).run() == 0
    assert result.get(timeout=10) == "hello grace"
