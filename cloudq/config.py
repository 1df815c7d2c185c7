"""Settings: one pydantic model, filled from kwargs, ``app.conf``, ``CLOUDQ_*`` env and defaults.

Precedence, highest first: keyword arguments to ``App(...)``; ``app.conf`` (``config_from_object``
and ``conf.update``); environment variables ``CLOUDQ_<SETTING>``; the defaults below. Values
in the environment that are not plain strings (dicts, lists) are written as JSON.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloudq.errors import ConfigError

Router = Callable[..., Any]


class Settings(BaseSettings):
    """Every cloudq setting, validated. Unknown names and ill-typed values are errors."""

    model_config = SettingsConfigDict(
        env_prefix="CLOUDQ_",
        extra="forbid",
        validate_default=True,
        arbitrary_types_allowed=True,
        frozen=True,
    )

    # -- AWS ---------------------------------------------------------------------------------------
    region: str = "us-east-1"
    """AWS region of the queues, table and bucket."""
    endpoint_url: str | None = None
    """Send every AWS call here instead of AWS (moto server, LocalStack)."""
    aws_max_attempts: int = Field(default=5, ge=1, le=20)
    """Attempts per AWS call, the first one included (botocore's standard retry mode, with
    exponential back-off): what one call to a failing service costs before it raises."""

    # -- queues ------------------------------------------------------------------------------------
    queue_prefix: str = "cloudq-"
    """Prefix of every SQS queue name, so several apps can share an account."""
    task_default_queue: str = "default"
    task_routes: dict[str, str | dict[str, Any]] | list[Any] | Router | None = None
    """Glob patterns of task names mapped to a queue (or options), and/or router functions."""
    task_default_priority: int | None = Field(default=None, ge=0, le=9)
    visibility_timeout: int = Field(default=60, ge=1, le=43200)
    """Seconds a received message stays hidden; the poller extends it while a task runs."""
    max_receive_count: int = Field(default=5, ge=1, le=1000)
    """Deliveries of one message before it is moved to the dead-letter queue."""
    message_size_limit: int = Field(default=256 * 1024, ge=1024, le=1024 * 1024)
    """Largest message body sent inline; larger bodies go to ``payload_bucket``."""
    payload_bucket: str | None = None
    """S3 bucket for bodies over ``message_size_limit`` (claim check), and for results too big
    for their DynamoDB item (without it such a result is stored as a FAILURE saying so)."""
    signing_key: str | None = None
    """HMAC-SHA256 key: senders sign bodies, workers refuse unsigned or forged ones."""
    signing_previous_keys: list[str] = Field(default_factory=list)
    """Keys that were ``signing_key`` before (key rotation): workers still accept messages signed
    with them, nothing is signed with them. Drop one once no message signed with it can still
    be waiting (SQS retention, delayed messages, EventBridge templates: docs/security.md)."""
    log_argument_values: bool = True
    """Whether dead-letter reasons, FAILURE records, error messages and logs may quote a short,
    cut prefix of an argument value; False: they give only its type and size (secrets in args)."""

    # -- results -----------------------------------------------------------------------------------
    result_table: str = "cloudq-results"
    result_expires: timedelta = timedelta(days=1)
    """How long results (and every other item) live before DynamoDB's TTL drops them."""
    task_ignore_result: bool = False
    task_track_started: bool = False
    task_serializer: Literal["json"] = "json"
    task_compression: Literal["gzip"] | None = None
    result_compression: Literal["gzip"] | None = None
    """``"gzip"``: results of 1 KiB or more are stored gzip+base64 (``result_encoding`` says so)
    and decoded on reading, so large compressible results fit in their item."""

    # -- execution ---------------------------------------------------------------------------------
    task_always_eager: bool = False
    """Run tasks in-process on ``delay``/``apply_async`` (tests, scripts)."""
    task_eager_propagates: bool = False
    task_acks_late: bool = True
    task_time_limit: float | None = Field(default=None, gt=0)
    task_soft_time_limit: float | None = Field(default=None, gt=0)
    task_default_rate_limit: str | None = None
    worker_concurrency: int = Field(default=8, ge=1, le=1024)
    worker_prefetch_multiplier: int = Field(default=1, ge=1, le=100)
    worker_pool: Literal["threads", "processes", "asyncio"] = "threads"
    worker_max_tasks_per_child: int | None = Field(default=None, ge=1)
    worker_poll_wait: float = Field(default=20.0, ge=0, le=20)
    """Seconds of SQS long polling while idle (20 is the cheapest)."""
    worker_shutdown_timeout: float = Field(default=600.0, ge=0)
    """Seconds a stopping worker waits for tasks in flight before it gives up on them."""
    worker_revoke_check_interval: float = Field(default=5.0, ge=0)
    """Seconds between the poller's reads of its running tasks' revokes (one BatchGetItem each
    time while busy, none while idle), to stop those revoked with ``terminate=True``; 0: off."""
    worker_store_failure_threshold: int = Field(default=2, ge=1, le=100)
    """Messages in a row whose handling failed because the store (DynamoDB) was unreachable
    (after the client's own retries) before the poller pauses receiving until a probe of the
    store succeeds. Keep ``max_receive_count`` above this + 1 (see the worker guide)."""
    worker_burst_wait: float = Field(default=30.0, ge=0)
    """Longest (seconds) ``cloudq poll --burst`` waits, once every queue looks empty and it
    holds nothing, for messages it cannot receive yet (in flight with other workers, delayed, a
    FIFO group not yet unlocked) before it exits anyway, with status 1. 0: exit as soon as the
    queues look empty."""
    worker_store_probe_max_interval: float = Field(default=30.0, gt=0, le=600)
    """Longest wait (seconds) between a paused poller's probes of the store (a GetItem); the
    waits start at 0.5 s and double."""

    # -- Lambda ---------------------------------------------------------------------------------
    lambda_min_time_to_start: float = Field(default=3.0, ge=0)
    """Records are not started when the function has less time left than this (seconds)."""
    lambda_structured_logging: bool = False
    """Powertools Logger: JSON lines, correlation id = task id."""
    lambda_metrics: bool = False
    """Powertools Metrics (EMF): TasksSucceeded, TasksFailed, TasksRetried, TaskDuration."""
    lambda_metrics_namespace: str = "cloudq"
    lambda_async_concurrency: int = Field(default=10, ge=1, le=10_000)
    """Records of one batch run at once when the app has async tasks (1: one by one)."""
    lambda_batch_size: int = Field(default=10, ge=1, le=10_000)
    """Records per invocation of a deployed function's SQS event source (10 at most on FIFO)."""
    lambda_batching_window: int = Field(default=0, ge=0, le=300)
    """Seconds a deployed event source may wait to fill a batch (needed above 10 records)."""
    lambda_max_concurrency: int | None = Field(default=None, ge=2, le=1000)
    """``MaximumConcurrency`` of every deployed event source; None: no cap (or, for a queue
    whose every task is rate limited, the limits' starts per second)."""
    lambda_timeout: int | None = Field(default=None, ge=1, le=900)
    """A deployed function's timeout (seconds); None: the longest task ``time_limit`` + 30 s."""
    lambda_default_timeout: int = Field(default=300, ge=1, le=900)
    """A deployed function's timeout when no task has a ``time_limit`` (seconds)."""

    # -- beat --------------------------------------------------------------------------------------
    beat_schedule: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Periodic tasks as in Celery: ``{name: {"task", "schedule", "args", "kwargs", "options"}}``"""
    beat_timezone: str = "UTC"
    """IANA time zone crontab schedules are read in (EventBridge Scheduler keeps it too)."""
    beat_max_interval: float = Field(default=5.0, gt=0)
    """Longest the local beat sleeps between looks at the schedule (seconds)."""
    beat_schedule_group: str | None = None
    """EventBridge Scheduler group (or rule name prefix) `cloudq schedule sync` owns.
    Default: ``<queue_prefix>beat``."""
    beat_role_arn: str | None = None
    """IAM role EventBridge Scheduler assumes to send to the queues (`schedule sync`)."""
    beat_solar_days: int = Field(default=7, ge=1, le=60)
    """How many days of one-time schedules `schedule sync` keeps ahead for solar entries."""

    @field_validator("result_expires", mode="before")
    @classmethod
    def _seconds_to_timedelta(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if isinstance(value, str) and value.replace(".", "", 1).isdigit():
            return timedelta(seconds=float(value))
        return value

    @field_validator("task_default_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str | None) -> str | None:
        from cloudq.ratelimit import RateLimit

        try:
            RateLimit.parse(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("queue_prefix", "task_default_queue")
    @classmethod
    def _queue_chars(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        if not set(value) <= allowed:
            raise ValueError("SQS queue names take only letters, digits, '-', '_' and '.'")
        return value

    @model_validator(mode="after")
    def _previous_keys_need_a_key(self) -> Settings:
        if self.signing_previous_keys and not self.signing_key:
            raise ValueError("signing_previous_keys is set but signing_key is not: previous "
                             "keys only verify, so set the current key too")
        return self

    @property
    def result_expires_s(self) -> int:
        return int(self.result_expires.total_seconds())


SETTING_NAMES = frozenset(Settings.model_fields)


def check_names(values: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError for the first unknown setting name, suggesting the closest one."""
    for name in values:
        if name not in SETTING_NAMES:
            close = difflib.get_close_matches(name, SETTING_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown setting {name!r} in {where}{hint}")


SECRET_SETTINGS = frozenset({"signing_key", "signing_previous_keys"})
"""Settings whose values an error message never shows."""


def _echoable(loc: tuple[Any, ...]) -> bool:
    """Whether an error may show its input: not for secrets, nor for errors about the whole
    settings model (whose input is every setting)."""
    return bool(loc) and loc[0] not in SECRET_SETTINGS


def build_settings(*layers: Mapping[str, Any]) -> Settings:
    """Validate the merged layers (later layers win) on top of env and defaults."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    try:
        return Settings(**merged)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}"
            + (f" (got {err.get('input')!r})" if _echoable(err['loc']) else "")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid setting: {problems}") from exc


class Conf:
    """``app.conf``: attribute access to the validated settings, writable like Celery's.

    Three layers, lowest first: ``config_from_object``, ``App(...)`` keyword arguments,
    explicit writes (``app.conf.update(...)``, ``app.conf.x = ...``). Every write is
    validated at once and raises ConfigError naming the setting.
    """

    def __init__(self, preconf: Mapping[str, Any], on_change: Callable[[], None]) -> None:
        check_names(preconf, "App(...) keyword arguments")
        object.__setattr__(self, "_layers", ({}, dict(preconf), {}))
        object.__setattr__(self, "_on_change", on_change)
        object.__setattr__(self, "_settings", build_settings(*self._layers))

    @property
    def settings(self) -> Settings:
        return self._settings  # type: ignore[no-any-return]

    def _replace_layer(self, index: int, values: Mapping[str, Any], where: str) -> None:
        check_names(values, where)
        layers = list(self._layers)
        layers[index] = {**layers[index], **values}
        settings = build_settings(*layers)  # validate before anything changes
        object.__setattr__(self, "_layers", tuple(layers))
        object.__setattr__(self, "_settings", settings)
        self._on_change()

    def update(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Set several settings at once."""
        self._replace_layer(2, {**(values or {}), **kwargs}, "app.conf")

    def load_object(self, obj: Any) -> None:
        """``config_from_object``: take setting names (any case) from a module, class or dict."""
        source = obj if isinstance(obj, Mapping) else {
            name: getattr(obj, name) for name in dir(obj) if not name.startswith("_")
        }
        values = {
            name.lower(): value for name, value in source.items()
            if name.lower() in SETTING_NAMES or name.isupper()
        }
        self._replace_layer(0, values, f"config object {obj!r}")

    def __getattr__(self, name: str) -> Any:
        if name in SETTING_NAMES:
            return getattr(self._settings, name)
        raise AttributeError(f"unknown setting {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name.lower())

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(SETTING_NAMES))

    def as_dict(self) -> dict[str, Any]:
        return self._settings.model_dump()  # type: ignore[no-any-return]
