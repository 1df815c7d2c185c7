"""cloudq: Celery's programming model on AWS serverless (SQS, DynamoDB, Lambda, EventBridge).

``import cloudq`` is light: boto3, click, moto and the rest load only when used.
"""

from __future__ import annotations

from cloudq import signals, states
from cloudq.app import App, current_app
from cloudq.app import shared_task as task
from cloudq.canvas import (
    Chain,
    Chord,
    Group,
    GroupResult,
    Signature,
    chain,
    chord,
    group,
    maybe_signature,
    signature,
)
from cloudq.errors import (
    ChordError,
    CloudqError,
    ConfigError,
    DecodeError,
    EncodeError,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    RemoteTaskError,
    Retry,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TaskTerminated,
    TimeLimitExceeded,
    TimeoutError,
    ValidationError,
)
from cloudq.result import AsyncResult
from cloudq.scheduler.schedules import crontab, schedule, solar
from cloudq.states import State
from cloudq.task import Request, Task

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncResult",
    "Chain",
    "Chord",
    "ChordError",
    "CloudqError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "Group",
    "GroupResult",
    "MaxRetriesExceededError",
    "NotRegistered",
    "Reject",
    "RemoteTaskError",
    "Request",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "State",
    "Task",
    "TaskRevokedError",
    "TaskTerminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "ValidationError",
    "chain",
    "chord",
    "crontab",
    "current_app",
    "group",
    "maybe_signature",
    "schedule",
    "signals",
    "signature",
    "solar",
    "states",
    "task",
]
