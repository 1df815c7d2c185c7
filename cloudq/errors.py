"""The exception tree: every error cloudq raises derives from :class:`CloudqError`.

Each class's docstring is its default message, so ``raise NotRegistered()`` still says
something useful.
"""

from __future__ import annotations

from typing import Any


class CloudqError(Exception):
    """A cloudq error."""

    def __init__(self, message: str | None = None, *args: Any) -> None:
        super().__init__(message or (self.__doc__ or "").strip(), *args)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


# -- configuration ------------------------------------------------------------------------------
class ConfigError(CloudqError):
    """The configuration is invalid."""


# -- AWS calls ----------------------------------------------------------------------------------
class ScheduleError(ConfigError, ValueError):
    """A periodic schedule that is invalid, or that EventBridge cannot express."""


class TransportError(CloudqError):
    """A call to the message queue (SQS) failed."""


# -- messages -----------------------------------------------------------------------------------
class MessageError(CloudqError):
    """A message could not be handled."""


class EncodeError(MessageError):
    """A value could not be encoded as JSON for a task message."""


class DecodeError(MessageError):
    """A task message could not be decoded."""


class SignatureError(DecodeError):
    """A task message's signature is missing or does not match the signing key."""


class PayloadMissing(DecodeError):
    """A claim check names an S3 object (or bucket) that does not exist: the message is poison."""


class ResultTooLarge(EncodeError):
    """A task's result is too large for its DynamoDB item, and no payload bucket is set."""


class ValidationError(MessageError):
    """The arguments do not match the task's signature."""


class NotRegistered(CloudqError, KeyError):
    """No task is registered under this name."""

    def __str__(self) -> str:  # KeyError quotes its message; we don't want that.
        return self.message


# -- results ------------------------------------------------------------------------------------
class ResultError(CloudqError):
    """A task result could not be obtained."""


class StoreError(ResultError):
    """The result store (DynamoDB) failed."""


class StoreUnavailable(StoreError):
    """The result store (DynamoDB) cannot be reached, is throttling or is failing on its side
    (a connection error, throttling or a 5xx, after the client's own retries): not the task's
    fault, and likely to pass."""


class TimeoutError(ResultError):
    """The operation timed out."""


class TaskRevokedError(ResultError):
    """The task was revoked or expired, so it has no result."""


class TaskTerminated(TaskRevokedError):
    """The task was revoked with terminate=True while it ran, and stopped."""


class RemoteTaskError(ResultError):
    """The task failed with an exception whose type cannot be imported here."""

    def __init__(self, message: str | None = None, *, exc_type: str = "") -> None:
        super().__init__(message)
        self.exc_type = exc_type

    def __str__(self) -> str:
        return f"{self.exc_type}: {self.message}" if self.exc_type else self.message


class ChordError(ResultError):
    """A chord's header task failed, so its callback cannot run."""


# -- task control flow --------------------------------------------------------------------------
class TaskControl(CloudqError):
    """Raised inside a task to change what happens to its message."""


class Retry(TaskControl):
    """The task is to be retried."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | None = None,
        *,
        eta: Any = None,
        args: Any = None,
        kwargs: Any = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or (f"Retry in {when}s: {exc!r}" if exc else f"Retry in {when}s"))
        self.exc = exc
        self.when = when
        """Countdown in seconds (or None when ``eta`` is given)."""
        self.eta = eta
        self.new_args = args
        self.new_kwargs = kwargs
        self.options = options or {}


class Reject(TaskControl):
    """The task rejected its message."""

    def __init__(self, reason: str | None = None, requeue: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason or ""
        self.requeue = requeue


class MaxRetriesExceededError(CloudqError):
    """The task has been retried the maximum number of times."""


class SoftTimeLimitExceeded(CloudqError):
    """The task ran past its soft time limit."""


class TimeLimitExceeded(CloudqError):
    """The task ran past its hard time limit and was killed."""


class WorkerLostError(CloudqError):
    """The process running the task exited before it finished."""


__all__ = [
    "ChordError",
    "CloudqError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "MaxRetriesExceededError",
    "MessageError",
    "NotRegistered",
    "PayloadMissing",
    "Reject",
    "RemoteTaskError",
    "ResultError",
    "ResultTooLarge",
    "Retry",
    "SignatureError",
    "SoftTimeLimitExceeded",
    "StoreError",
    "StoreUnavailable",
    "TaskControl",
    "TaskRevokedError",
    "TaskTerminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "TransportError",
    "ValidationError",
    "WorkerLostError",
]
