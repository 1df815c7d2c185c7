"""Task states, as Celery names them."""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    """The state of a task, as stored with its result."""

    PENDING = "PENDING"
    """Unknown to the store: not yet run, or its result has expired."""
    RECEIVED = "RECEIVED"
    """Received by a worker."""
    STARTED = "STARTED"
    """Started by a worker (only stored when ``task_track_started`` is on)."""
    PROGRESS = "PROGRESS"
    """Running and reporting progress through ``update_state``."""
    RETRY = "RETRY"
    """Failed and scheduled to run again."""
    SUCCESS = "SUCCESS"
    """Finished and returned a value."""
    FAILURE = "FAILURE"
    """Finished by raising an exception, or quarantined as poison."""
    REVOKED = "REVOKED"
    """Revoked or expired before it ran; it will not run."""

    def __str__(self) -> str:
        return self.value


PENDING = State.PENDING
RECEIVED = State.RECEIVED
STARTED = State.STARTED
PROGRESS = State.PROGRESS
RETRY = State.RETRY
SUCCESS = State.SUCCESS
FAILURE = State.FAILURE
REVOKED = State.REVOKED

READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
"""States after which a task will not change again."""
EXCEPTION_STATES = frozenset({"RETRY", "FAILURE", "REVOKED"})
"""States whose result is an exception."""
PROPAGATE_STATES = frozenset({"FAILURE", "REVOKED"})
"""States that ``AsyncResult.get(propagate=True)`` raises for."""
