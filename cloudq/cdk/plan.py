"""What a deployed app needs, computed from the App by the code the runtime names things with.

I/O-free and CDK-free: the construct (``cloudq.cdk.construct``) turns a ``Plan`` into
resources, ``cloudq deploy --print`` and the tests read it directly. Every name here comes
from the same functions the runtime calls (``App.queues``, ``dead_letter_queue_name``,
``Settings.result_table``, ``scheduler.eventbridge.wanted``), so a deployed worker finds
exactly what the stack made. Everything the stack cannot serve is refused here, by name,
before any resource is built.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cloudq.errors import ConfigError, ScheduleError
from cloudq.transports.base import dead_letter_queue_name, is_fifo

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.ratelimit import RateLimit
    from cloudq.scheduler.eventbridge import Wanted
    from cloudq.task import Task

Workers = Literal["lambda", "fargate"]

LAMBDA_MAX_TIMEOUT_S = 900
"""Lambda's longest function timeout."""
LAMBDA_TIMEOUT_MARGIN_S = 30
"""Added to the longest task time limit: decoding, result write and follow-ups take time too."""
VISIBILITY_PER_LAMBDA_TIMEOUT = 6
"""AWS's advice: a queue's visibility timeout at least six times its function's timeout."""
MAX_QUEUE_NAME = 80
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
FIFO_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}\.fifo$")
MAX_VISIBILITY_S = 12 * 3600

WORKER_SQS_ACTIONS = (
    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
    "sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
)
"""What a worker does to the app's queues: receive, delete, extend visibility, send
follow-ups, retries and hops (the batch calls share these actions), resolve URLs, and read
depths (``cloudq poll`` checks each queue before polling; Lambda's event source reads them)."""
WORKER_DLQ_ACTIONS = ("sqs:SendMessage", "sqs:GetQueueUrl")
"""A worker dead-letters poison itself, with its reason; it never reads a DLQ (``cloudq dlq``
and ``cloudq redrive`` are an operator's commands)."""
WORKER_TABLE_ACTIONS = (
    "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)
"""Results, chord joins, revokes, locks and rate buckets are items of one table: read
(revokes, idempotency, chord members), written, counted (joins, rate buckets), and a
chord's fired claim is deleted again when its callback could not be sent."""
WORKER_BUCKET_ACTIONS = ("s3:GetObject", "s3:PutObject")
"""Claim checks: large arguments are read, large follow-ups (retries, chain steps) and
results too big for their item written."""
SEND_ACTIONS = ("sqs:SendMessage", "sqs:GetQueueUrl")
"""A client that sends tasks (``grant_send``): it looks each queue's URL up, then sends."""
SEND_TABLE_ACTIONS = ("dynamodb:PutItem", "dynamodb:DeleteItem")
"""A sender also writes items (a chord's join, a saved group, revokes) and deletes them
(``forget()``); DeleteItem gives nothing PutItem on the same items does not."""
SEND_BUCKET_ACTIONS = ("s3:PutObject",)
"""A sender writes arguments over ``message_size_limit`` to the payload bucket."""
READ_RESULT_ACTIONS = ("dynamodb:GetItem", "dynamodb:BatchGetItem")
"""A client that reads results (``grant_read_results``): ``get``, ``GroupResult.get``."""
READ_RESULT_BUCKET_ACTIONS = ("s3:GetObject",)
"""A reader also fetches results too big for their item, which workers keep in the bucket."""
SCHEDULE_ACTIONS = ("sqs:SendMessage",)
"""EventBridge Scheduler's role: it only sends the periodic tasks' messages."""


@dataclass(frozen=True)
class QueuePlan:
    """One SQS queue (a priority band of a logical queue) and its dead-letter queue."""

    logical: str
    """The band's logical name (``default-high``): what the runtime is given."""
    name: str
    """The physical SQS name: ``queue_prefix`` + logical."""
    dead_letter_name: str
    fifo: bool
    visibility_timeout_s: int
    max_receive_count: int
    batch_size: int
    batching_window_s: int
    max_concurrency: int | None
    """Lambda's ``MaximumConcurrency`` for this band's event source, or None (no cap)."""

    @property
    def construct_id(self) -> str:
        """A stable CDK id for the band, from its logical name."""
        return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", self.logical))


@dataclass(frozen=True)
class Plan:
    """Everything the stack creates for one app, named as the runtime names it."""

    app_path: str
    region: str
    workers: Workers
    queues: list[QueuePlan]
    table: str
    bucket: str | None
    payload_prefix: str
    payload_expiry_days: int
    lambda_timeout_s: int
    longest_task_s: float | None
    """The longest ``time_limit`` of any task (or ``task_time_limit``), None when unbounded."""
    schedule_group: str
    schedules: list[Wanted] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    """What every worker and client needs to find the resources (``CLOUDQ_*``)."""

    @property
    def worker_queues(self) -> list[str]:
        """The logical queue names a ``cloudq poll -Q`` of this app serves."""
        names: list[str] = []
        for queue in self.queues:
            logical = queue.logical
            for suffix in ("-high", "-low"):
                if not queue.fifo and logical.endswith(suffix):
                    logical = logical.removesuffix(suffix)
            names.append(logical)
        return list(dict.fromkeys(names))

    def queue_named(self, physical: str) -> QueuePlan:
        for queue in self.queues:
            if queue.name == physical:
                return queue
        raise KeyError(physical)


def plan(app: App, *, app_path: str, workers: Workers = "lambda",
         queues: Sequence[str] | None = None) -> Plan:
    """The deployment of ``app`` (imported from ``app_path``), or ConfigError/ScheduleError
    naming the task, entry or queue that cannot be deployed."""
    if workers not in ("lambda", "fargate"):
        raise ConfigError(f"workers={workers!r}: expected 'lambda' or 'fargate'")
    settings = app.settings
    longest = longest_time_limit(app)
    lambda_timeout_s = _lambda_timeout(app, longest) if workers == "lambda" else 0
    visibility_s = settings.visibility_timeout
    if workers == "lambda":
        visibility_s = max(visibility_s, VISIBILITY_PER_LAMBDA_TIMEOUT * lambda_timeout_s)
    elif longest is not None:
        visibility_s = max(visibility_s, math.ceil(longest))
    visibility_s = min(visibility_s, MAX_VISIBILITY_S)
    bands = app.queues(list(queues) if queues else app.known_queues())
    queue_plans = [
        _queue_plan(app, band, visibility_s=visibility_s) for band in bands
    ]
    return Plan(
        app_path=app_path,
        region=settings.region,
        workers=workers,
        queues=queue_plans,
        table=settings.result_table,
        bucket=settings.payload_bucket,
        payload_prefix=_payload_prefix(),
        payload_expiry_days=_payload_expiry_days(),
        lambda_timeout_s=lambda_timeout_s,
        longest_task_s=longest,
        schedule_group=_schedule_group(app),
        schedules=_schedules(app),
        environment=client_environment(app, app_path),
    )


def client_environment(app: App, app_path: str) -> dict[str, str]:
    """The ``CLOUDQ_*`` variables that point a worker or a client at the deployed resources."""
    settings = app.settings
    env = {
        "CLOUDQ_APP": app_path,
        "CLOUDQ_QUEUE_PREFIX": settings.queue_prefix,
        "CLOUDQ_RESULT_TABLE": settings.result_table,
        "CLOUDQ_TASK_DEFAULT_QUEUE": settings.task_default_queue,
    }
    if settings.payload_bucket:
        env["CLOUDQ_PAYLOAD_BUCKET"] = settings.payload_bucket
    return env


def longest_time_limit(app: App) -> float | None:
    """The longest hard time limit a task of the app may run for, or None if one is unbounded
    and no default limit is set."""
    default = app.settings.task_time_limit
    limits = [task.time_limit or default for task in _user_tasks(app)]
    known = [limit for limit in limits if limit is not None]
    return max(known) if known else default


def _lambda_timeout(app: App, longest: float | None) -> int:
    settings = app.settings
    for task in _user_tasks(app):
        limit = task.time_limit or settings.task_time_limit
        if limit is not None and limit + LAMBDA_TIMEOUT_MARGIN_S > LAMBDA_MAX_TIMEOUT_S:
            raise ConfigError(
                f"task {task.name!r} has time_limit={limit:g} s, more than Lambda's "
                f"{LAMBDA_MAX_TIMEOUT_S} s (15 minutes) less {LAMBDA_TIMEOUT_MARGIN_S} s for "
                "cloudq's own work: deploy with workers=\"fargate\" (-c workers=fargate), "
                "where `cloudq poll` has no such limit, or lower the task's time_limit")
    if settings.lambda_timeout is not None:
        if longest is not None and settings.lambda_timeout < longest + LAMBDA_TIMEOUT_MARGIN_S:
            raise ConfigError(
                f"lambda_timeout={settings.lambda_timeout} s is shorter than the longest task "
                f"time_limit ({longest:g} s) plus {LAMBDA_TIMEOUT_MARGIN_S} s")
        return settings.lambda_timeout
    if longest is None:
        return settings.lambda_default_timeout
    return min(LAMBDA_MAX_TIMEOUT_S, math.ceil(longest) + LAMBDA_TIMEOUT_MARGIN_S)


def _queue_plan(app: App, band: str, *, visibility_s: int) -> QueuePlan:
    settings = app.settings
    name = settings.queue_prefix + band
    dead_letter = settings.queue_prefix + dead_letter_queue_name(band)
    for physical in (name, dead_letter):
        check_queue_name(physical)
    fifo = is_fifo(band)
    batch_size = settings.lambda_batch_size
    if fifo and batch_size > 10:
        batch_size = 10  # FIFO event sources take at most 10
    if batch_size > 10 and settings.lambda_batching_window < 1:
        raise ConfigError(
            f"lambda_batch_size={batch_size}: batches over 10 need lambda_batching_window >= 1 "
            "(an SQS event source rule)")
    return QueuePlan(
        logical=band, name=name, dead_letter_name=dead_letter, fifo=fifo,
        visibility_timeout_s=visibility_s, max_receive_count=settings.max_receive_count,
        batch_size=batch_size,
        batching_window_s=0 if fifo else settings.lambda_batching_window,
        max_concurrency=settings.lambda_max_concurrency or _rate_capped_concurrency(app, band),
    )


def check_queue_name(physical: str) -> None:
    """ConfigError unless SQS accepts ``physical`` as a queue name."""
    pattern = FIFO_QUEUE_NAME if physical.endswith(".fifo") else QUEUE_NAME
    if not pattern.match(physical):
        raise ConfigError(
            f"queue {physical!r}: SQS queue names are 1-{MAX_QUEUE_NAME} characters of letters, "
            "digits, '-' and '_' (FIFO names end in '.fifo'); the name is queue_prefix + queue "
            "+ band suffix, so shorten the queue name or queue_prefix")


def _rate_capped_concurrency(app: App, band: str) -> int | None:
    """With every task of ``band`` rate limited, no more concurrent invocations than the
    limits let tasks start per second (at least Lambda's minimum of 2), so invocations are
    not started only to wait for tokens; None when any task there is unlimited."""
    from cloudq.ratelimit import RateLimit

    base = band
    for suffix in ("-high", "-low"):
        base = base.removesuffix(suffix) if not is_fifo(band) else base
    tasks = [task for task in _user_tasks(app) if _queue_of(app, task) == base]
    if not tasks:
        return None
    limits: list[RateLimit | None] = [
        RateLimit.parse(task.rate_limit or app.settings.task_default_rate_limit)
        for task in tasks]
    if any(limit is None for limit in limits):
        return None
    per_s = sum(limit.count / limit.window_s for limit in limits if limit is not None)
    return max(2, min(1000, math.ceil(per_s)))


def _queue_of(app: App, task: Task[Any, Any]) -> str:
    """The queue a task's messages go to when nothing is given at call time."""
    return task.queue or app._routed_queue(task) or app.settings.task_default_queue


def _user_tasks(app: App) -> list[Task[Any, Any]]:
    return [task for name, task in app.tasks.items() if not name.startswith("cloudq.")]


def _payload_prefix() -> str:
    from cloudq.payloads import PAYLOAD_PREFIX

    return PAYLOAD_PREFIX


def _payload_expiry_days() -> int:
    from cloudq.payloads import PAYLOAD_EXPIRY_DAYS

    return PAYLOAD_EXPIRY_DAYS


def _schedule_group(app: App) -> str:
    from cloudq.scheduler.sync import group_name

    return group_name(app)


def _schedules(app: App) -> list[Wanted]:
    """The EventBridge Scheduler schedules of ``beat_schedule``: ``cloudq schedule export``'s
    translation and refusals, plus solar entries, which a stack cannot keep rolling forward."""
    from cloudq.scheduler.entries import load_entries
    from cloudq.scheduler.eventbridge import wanted
    from cloudq.scheduler.schedules import solar

    solar_entries = [e.name for e in load_entries(app) if isinstance(e.schedule, solar)]
    if solar_entries:
        raise ScheduleError(
            f"schedule(s) {', '.join(map(repr, solar_entries))}: solar schedules become one-time "
            "EventBridge schedules a few days ahead, which a deployed stack cannot roll forward; "
            "keep them out of the deployed app's beat_schedule and run `cloudq schedule sync` "
            "daily for them (or `cloudq beat`)")
    return wanted(app, target="scheduler")
