"""The app the IAM test deploys and runs: one task for each kind of AWS call a worker makes.

``build()`` makes a fresh App with these tasks; the test builds one per actor (each worker
kind, each client), so every actor has its own AWS clients and its calls are its own. The
module-level ``fargate_worker`` is what the Fargate stack's ``cloudq poll -A`` loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import cloudq
from cloudq.errors import Reject

if TYPE_CHECKING:
    from cloudq.aws import AwsClients

FANOUT_ENTRY = "tick"
"""A 15-second beat entry: EventBridge sends it as one ``cloudq.fanout`` message a minute."""


class ObservedApp(cloudq.App):
    """An App that shows every ``AwsClients`` it builds to its observers: a change of
    settings (the CLI's ``-A`` loading makes one) builds new clients, and they are seen too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.observers: list[Callable[[AwsClients], None]] = []
        super().__init__(*args, **kwargs)

    @cached_property
    def aws(self) -> AwsClients:
        clients: AwsClients = cloudq.App.aws.func(self)
        for observer in self.observers:
            observer(clients)
        return clients

    def observe(self, observer: Callable[[AwsClients], None]) -> None:
        self.observers.append(observer)
        if "aws" in self.__dict__:
            observer(self.aws)


def add(x: int, y: int) -> int:
    return x + y


def tsum(values: list[int]) -> int:
    return sum(values)


def flaky(self: cloudq.Task[..., int], fail_times: int) -> int:
    """Retried (re-sent by the worker) until it has failed ``fail_times`` times."""
    if self.request.retries < fail_times:
        raise OSError("transient")
    return self.request.retries


def exhaust() -> None:
    """Out of retries at once: FAILURE, and the worker dead-letters it with the reason."""
    raise OSError("always down")


def fail() -> None:
    raise ValueError("bad input")


def progress(self: cloudq.Task[..., int], steps: int) -> int:
    for step in range(1, steps + 1):
        self.update_state(state="PROGRESS", meta={"current": step, "total": steps})
    return steps


def slow(seconds: float) -> float:
    """Outlives half a heartbeat interval, so the poller extends its message's visibility."""
    time.sleep(seconds)
    return seconds


def size(blob: str) -> int:
    return len(blob)


def big_retry(self: cloudq.Task[..., int], blob: str) -> int:
    """A large argument retried once: the worker writes the re-sent body to S3."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return len(blob)


def requeue(self: cloudq.Task[..., int]) -> int:
    """Rejected with requeue on its first delivery: the message is made visible again."""
    received = int(self.request.delivery_info.get("receive_count", 1))
    if received < 2:
        raise Reject("not yet", requeue=True)
    return received


def limited(index: int) -> int:
    return index


def once(value: Any) -> Any:
    return value


def large(size: int) -> str:
    """A result too big for its item: the worker keeps it in the bucket, the client reads it."""
    return "L" * size


TASKS: list[tuple[Callable[..., Any], dict[str, Any]]] = [
    (add, {}), (tsum, {}),
    (flaky, {"bind": True, "autoretry_for": (OSError,), "max_retries": 2,
             "default_retry_delay": 0, "retry_jitter": False}),
    (exhaust, {"autoretry_for": (OSError,), "max_retries": 0}),
    (fail, {}), (progress, {"bind": True}), (slow, {}), (size, {}),
    (big_retry, {"bind": True, "max_retries": 1}), (requeue, {"bind": True}),
    (limited, {"rate_limit": "1/h"}), (once, {"idempotent": True}), (large, {}),
]
"""Each task (named ``iam.<function>``) and its options."""


def build(name: str = "iam") -> ObservedApp:
    """An App with the scenario's tasks (settings are the caller's)."""
    app = ObservedApp(name, set_as_current=False)
    app.conf.beat_schedule = {
        FANOUT_ENTRY: {"task": "iam.add", "schedule": 15.0, "args": (1, 1)},
    }
    for fn, options in TASKS:
        app.task(name=f"iam.{fn.__name__}", **options)(fn)
    return app


fargate_worker = build()
"""The worker ``cloudq poll -A tests.deploy.iam_app:fargate_worker`` runs (settings: the test's)."""
