"""The poller under backlog, burst, hard time limits and a store outage, as a user runs it: real
``cloudq poll`` processes against moto server (through a fault-injecting proxy for the outage).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.results import task_key
from cloudq.transports.base import OutgoingMessage, dead_letter_queue_name
from cloudq.transports.sqs_wire import NO_REASON, dead_letter_reason
from tests.integration.apps import workers
from tests.integration.e2e_harness import wait_for
from tests.integration.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = "tests.integration.apps.workers:app"
READY = {"SUCCESS", "FAILURE", "REVOKED"}


@dataclass
class World:
    """One test's queues and table, this process's app on them, and its worker processes."""

    local_aws: LocalAws
    prefix: str
    workdir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, Any]:
        return {"endpoint_url": self.local_aws.endpoint_url, "queue_prefix": self.prefix,
                "result_table": f"{self.prefix}results", "worker_poll_wait": 1,
                "visibility_timeout": 30, **self.overrides}

    def setup(self, queues: list[str]) -> World:
        workers.app.conf.update(self.settings)
        provision(workers.app, queues)
        return self

    def start(self, *args: str, endpoint_url: str | None = None) -> subprocess.Popen[str]:
        settings = {**self.settings, "endpoint_url": endpoint_url or self.settings["endpoint_url"]}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
        env.update({f"CLOUDQ_{k.upper()}": str(v) for k, v in settings.items()})
        env.update({"E2E_DIR": str(self.workdir), "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "PYTHONUNBUFFERED": "1"})
        log = (self.workdir / f"worker-{len(self.workers)}.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "cloudq.cli", "poll", "-A", APP_PATH, "--loglevel", "info",
             *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.workers.append(worker)
        return worker

    def log(self, index: int = 0) -> str:
        return (self.workdir / f"worker-{index}.log").read_text()

    def starts(self) -> list[tuple[str, float]]:
        """(label, start time) of every ``record`` run, in start order."""
        path = self.workdir / "starts"
        lines = path.read_text().splitlines() if path.exists() else []
        runs = [(label, float(at)) for label, at in (line.split() for line in lines)]
        return sorted(runs, key=lambda run: run[1])

    def state(self, task_id: str) -> dict[str, Any]:
        return workers.app.store.get(task_key(task_id)) or {"state": "PENDING"}

    def counts(self, queue: str) -> int:
        """Visible + in flight + delayed messages in ``queue``."""
        sqs = workers.app.aws.sqs
        url = sqs.get_queue_url(QueueName=self.prefix + queue)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return sum(int(attrs[name]) for name in ("ApproximateNumberOfMessages",
                                                 "ApproximateNumberOfMessagesNotVisible",
                                                 "ApproximateNumberOfMessagesDelayed"))

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)


@pytest.fixture
def world(local_aws: LocalAws, unique_prefix: str, tmp_path: Path) -> Iterator[World]:
    w = World(local_aws, unique_prefix, tmp_path)
    try:
        yield w
    finally:
        w.stop()


# -- item 11: burst means "the queues are drained" ---------------------------------------------
def test_burst_on_a_fifo_queue_runs_every_message_of_one_group(world: World) -> None:
    world.setup(["orders.fifo"])
    for i in range(5):
        workers.record.apply_async((f"f{i}",), queue="orders.fifo", message_group_id="g")

    worker = world.start("-Q", "orders.fifo", "--burst", "-c", "1")

    assert worker.wait(30) == 0, world.log()
    assert [label for label, _ in world.starts()] == ["f0", "f1", "f2", "f3", "f4"], world.log()
    assert world.counts("orders.fifo") == 0


def test_burst_waits_for_a_delayed_message(world: World) -> None:
    world.setup(["default"])
    sent = time.monotonic()
    workers.record.apply_async(("late",), countdown=2)

    worker = world.start("--burst", "-c", "2")

    assert worker.wait(30) == 0, world.log()
    assert [label for label, _ in world.starts()] == ["late"], world.log()
    assert time.monotonic() - sent >= 2


# -- item 10: strict priorities under backlog --------------------------------------------------
def test_under_backlog_one_thread_runs_every_high_message_then_normal_then_low(
    world: World,
) -> None:
    world.setup(["default"])
    for band, priority in (("low", 0), ("normal", None), ("high", 9)):  # the worst order
        for i in range(3):
            workers.record.apply_async((f"{band}{i}",), priority=priority)

    worker = world.start("--burst", "-c", "1")

    assert worker.wait(30) == 0, world.log()
    bands = [label.rstrip("0123456789") for label, _ in world.starts()]
    assert bands == ["high"] * 3 + ["normal"] * 3 + ["low"] * 3, world.log()


# -- item 12: nothing silently exceeds its hard time limit -------------------------------------
@pytest.mark.parametrize(("pool", "task"), [("threads", workers.overrun),
                                            ("asyncio", workers.aoverrun)])
def test_a_task_past_its_hard_limit_fails_with_time_limit_exceeded_at_the_limit(
    world: World, pool: str, task: Any,
) -> None:
    world.setup(["default"])
    world.start("--pool", pool, "-c", "2")
    result = task.delay(4)
    name = "overrun" if pool == "threads" else "aoverrun"

    wait_for(lambda: world.starts(), timeout_s=20, what="the task to start")
    started_at = world.starts()[0][1]
    state = wait_for(lambda: (s := world.state(result.id))["state"] in READY and s,
                     timeout_s=5, what="the task's outcome")
    failed_after_s = time.time() - started_at

    assert state["state"] == "FAILURE", state
    assert state["exc_type"].endswith("TimeLimitExceeded"), state
    assert failed_after_s < 1.6, f"recorded {failed_after_s:.2f}s after the start"
    if pool == "threads":  # a blocked thread cannot be stopped: its late end is thrown away
        wait_for(lambda: "outcome discarded" in world.log(), timeout_s=5, what="the late end")
    else:  # the coroutine was cancelled at the limit
        time.sleep(max(0.0, started_at + 4.5 - time.time()))  # past the body's own end
    assert world.state(result.id)["state"] == "FAILURE"
    assert f"{name}-4-done" not in [label for label, _ in world.starts()]


# -- item 6: a long store outage pauses the worker instead of dead-lettering healthy tasks -----
def test_a_long_store_outage_pauses_receiving_and_loses_no_task_to_the_dlq(
    world: World,
) -> None:
    world.overrides.update(visibility_timeout=2, max_receive_count=3, aws_max_attempts=2,
                           worker_store_probe_max_interval=2)
    world.setup(["default"])
    outage_s = 12.0
    with FaultProxy(world.local_aws.endpoint_url) as proxy:
        proxy.down.set()
        down_at = time.monotonic()
        results = [workers.record.delay(f"t{i}") for i in range(4)]
        world.start("-c", "2", endpoint_url=proxy.endpoint_url)

        wait_for(lambda: "pausing receives" in world.log(), timeout_s=outage_s - 2,
                 what="the worker to notice the outage")
        time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))  # the outage lasts
        proxy.down.clear()

        wait_for(lambda: all(world.state(r.id)["state"] == "SUCCESS" for r in results),
                 timeout_s=10, what="every task to succeed after the outage")
        assert proxy.refused > 0

    log = world.log()
    assert "DynamoDB unreachable: pausing receives" in log, log
    assert "resuming receives" in log, log
    assert sorted(label for label, _ in world.starts()) == ["t0", "t1", "t2", "t3"]
    for band in ("default-high", "default", "default-low"):
        assert world.counts(f"{band}-dlq") == 0, f"{band}-dlq is not empty:\n{log}"


def test_a_message_sqs_dead_lettered_says_so_and_runs_when_its_body_is_sent_back(
    world: World,
) -> None:
    world.overrides.update(max_receive_count=1)
    world.setup(["default"])
    transport = workers.app.transport
    result = workers.record.delay("redriven")
    [taken] = transport.receive("default", 1, 1)  # a worker took it and was killed
    transport.retry_later(taken, 0)
    assert transport.receive("default", 1, 1) == []  # SQS's redrive policy moved it

    [dead] = transport.receive(dead_letter_queue_name("default"), 1, 1)
    assert dead_letter_reason(dead.attributes) == NO_REASON
    assert dead.body == taken.body
    transport.send("default", OutgoingMessage(body=dead.body))  # a plain redrive
    transport.ack([dead])
    worker = world.start("--burst", "-c", "1")

    assert worker.wait(30) == 0, world.log()
    assert world.state(result.id)["state"] == "SUCCESS"
    assert [label for label, _ in world.starts()] == ["redriven"]
