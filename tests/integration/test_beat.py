"""Real `cloudq beat` processes on the moto server: on time, once per tick with two beats,
and a restart that neither repeats nor skips what was sent."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq import message
from cloudq.localaws import LocalAws
from cloudq.provision import provision
from tests.integration.e2e_harness import ROOT, wait_for

pytestmark = pytest.mark.integration

APP_PATH = "tests.integration.apps.beat_app:app"
NAME = "every-second"


class Beats:
    def __init__(self, app: cloudq.App, env: dict[str, str], workdir: Path) -> None:
        self.app, self.env, self.workdir = app, env, workdir
        self.processes: list[subprocess.Popen[str]] = []
        self.seen: dict[str, dict[str, Any]] = {}  # task id -> body + SentTimestamp
        self.copies = 0

    def start(self) -> subprocess.Popen[str]:
        log = (self.workdir / f"beat-{len(self.processes)}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudq.cli", "beat", "-A", APP_PATH, "-l", "info"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.processes.append(process)
        return process

    def log(self, index: int) -> str:
        return (self.workdir / f"beat-{index}.log").read_text()

    def drain(self) -> int:
        sqs = self.app.aws.sqs
        url = sqs.get_queue_url(QueueName=self.app.settings.queue_prefix + "default")["QueueUrl"]
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                      AttributeNames=["SentTimestamp"]).get("Messages", [])
            if not got:
                return len(self.seen)
            for m in got:
                body = json.loads(m["Body"])
                self.copies += 1
                self.seen[body["id"]] = {**body, "sent_ms": int(m["Attributes"]["SentTimestamp"])}
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def beats(local_aws: LocalAws, unique_prefix: str, tmp_path: Path) -> Iterator[Beats]:
    settings = {"endpoint_url": local_aws.endpoint_url, "queue_prefix": unique_prefix,
                "result_table": f"{unique_prefix}results", "beat_max_interval": 0.5}
    from tests.integration.apps.beat_app import app

    app.conf.update(settings)
    provision(app, ["default"])
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    env.update({f"CLOUDQ_{k.upper()}": str(v) for k, v in settings.items()})
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "PYTHONUNBUFFERED": "1"})
    runner = Beats(app, env, tmp_path)
    try:
        yield runner
    finally:
        runner.stop()


def ticks_of(seen: dict[str, dict[str, Any]]) -> dict[str, datetime]:
    """Task id -> the tick it is for (every id is checked to be a tick id of the entry)."""
    out = {}
    for task_id, body in seen.items():
        at = datetime.fromtimestamp(round(body["sent_ms"] / 1000), UTC)
        for candidate in (at, *(datetime.fromtimestamp(at.timestamp() - d, UTC)
                                for d in (1, 2, 3))):
            if message.tick_id(NAME, candidate) == task_id:
                out[task_id] = candidate
                break
        else:
            raise AssertionError(f"{task_id} is not the id of a tick near {at}")
    return out


def test_two_beats_send_every_tick_once_and_on_time(beats: Beats) -> None:
    beats.start()
    beats.start()
    wait_for(lambda: beats.drain() >= 6, timeout_s=30, what="six ticks")
    beats.stop()
    beats.drain()

    ticks = sorted(ticks_of(beats.seen).values())
    assert beats.copies == len(beats.seen), "a tick was sent twice"
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(ticks)}
    assert gaps == {1.0}, f"ticks skipped: {ticks}"
    late = [body["sent_ms"] / 1000 - ticks_of({i: body})[i].timestamp()
            for i, body in beats.seen.items()]
    assert max(late) < 1.0, f"sent late: {sorted(late)}"
    assert "sent every-second (beat.add)" in beats.log(0) + beats.log(1)
    assert all(body["headers"]["periodic_task_name"] == NAME for body in beats.seen.values())


def test_a_restarted_beat_neither_repeats_nor_skips_what_it_sent(beats: Beats) -> None:
    first = beats.start()
    wait_for(lambda: beats.drain() >= 2, timeout_s=30, what="two ticks")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    before = set(beats.seen)
    time.sleep(2.5)  # two or three ticks pass with no beat running
    beats.start()
    wait_for(lambda: beats.drain() >= len(before) + 2, timeout_s=30, what="ticks after restart")
    beats.stop()
    beats.drain()

    assert beats.copies == len(beats.seen), "a tick was sent twice"
    after = {i: t for i, t in ticks_of(beats.seen).items() if i not in before}
    caught_up = min(after.values())
    ready_at = first_log_time(beats.log(1))  # a loaded machine may take a while to start it
    assert caught_up.timestamp() <= ready_at, "the missed tick was not sent on restart"
    assert "for " in beats.log(1)


def first_log_time(log: str) -> float:
    """When a process wrote its first log line (``[2026-12-01 22:29:46,170: INFO/...]``)."""
    stamp = log.split("]", 1)[0].lstrip("[").rsplit(":", 1)[0]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
