"""Run the e2e app's workers as real processes against the session's moto server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudq.app import App
from cloudq.localaws import LocalAws
from cloudq.provision import provision

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = "tests.integration.apps.e2e:app"


def counts(app: App, queue: str = "default") -> dict[str, int]:
    """Visible and in-flight messages on one of the app's queues."""
    sqs = app.aws.sqs
    url = sqs.get_queue_url(QueueName=app.settings.queue_prefix + queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return {"visible": int(attrs["ApproximateNumberOfMessages"]),
            "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"])}


def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


@dataclass
class Harness:
    """One test's world: settings shared by this process's app and its worker processes."""

    app: App
    local_aws: LocalAws
    prefix: str
    workdir: Path
    visibility_timeout_s: int = 30
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.local_aws.endpoint_url,
            "queue_prefix": self.prefix,
            "result_table": f"{self.prefix}results",
            "payload_bucket": f"{self.prefix}payloads",
            "visibility_timeout": self.visibility_timeout_s,
        }

    def setup(self) -> Harness:
        self.app.conf.update(self.settings)
        provision(self.app, ["default", "emails"])
        return self

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
        env.update({f"CLOUDQ_{k.upper()}": str(v) for k, v in self.settings.items()})
        env.update({"E2E_DIR": str(self.workdir), "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "PYTHONUNBUFFERED": "1"})
        return env

    def start_worker(self, *args: str,
                     extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        log = (self.workdir / f"worker-{len(self.workers)}.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "cloudq.cli", "poll", "-A", APP_PATH, "-c", "4",
             "--loglevel", "info", *args],
            cwd=ROOT, env={**self.env(), **(extra_env or {})}, stdout=log,
            stderr=subprocess.STDOUT, text=True,
        )
        self.workers.append(worker)
        return worker

    def log(self, index: int = 0) -> str:
        return (self.workdir / f"worker-{index}.log").read_text()

    def marks(self, name: str) -> list[str]:
        path = self.workdir / name
        return path.read_text().splitlines() if path.exists() else []

    def queue_counts(self, queue: str = "default") -> dict[str, int]:
        sqs = self.app.aws.sqs
        url = sqs.get_queue_url(QueueName=self.prefix + queue)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return {
            "visible": int(attrs["ApproximateNumberOfMessages"]),
            "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
            "delayed": int(attrs["ApproximateNumberOfMessagesDelayed"]),
        }

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)


def harness(app: App, local_aws: LocalAws, prefix: str, workdir: Path,
            **kwargs: Any) -> Iterator[Harness]:
    h = Harness(app, local_aws, prefix, workdir, **kwargs).setup()
    try:
        yield h
    finally:
        h.stop_workers()
