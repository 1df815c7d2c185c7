"""Signals, as Celery names them. Receivers that raise are logged, never break a task."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Signal:
    """A named hook: ``@task_success.connect`` then ``def on(sender, **kwargs): ...``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: list[Receiver] = []
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver) -> Receiver:
        with self._lock:
            if receiver not in self._receivers:
                self._receivers.append(receiver)
        return receiver

    def disconnect(self, receiver: Receiver) -> None:
        with self._lock:
            if receiver in self._receivers:
                self._receivers.remove(receiver)

    def send(self, sender: Any = None, **kwargs: Any) -> None:
        for receiver in list(self._receivers):
            try:
                receiver(sender=sender, signal=self, **kwargs)
            except Exception:
                logger.exception("signal %s: receiver %r failed", self.name, receiver)

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"


task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
store_unavailable = Signal("store_unavailable")
"""A poller paused receiving because the store is unreachable: ``sender`` is the poller, with
``failures`` (messages in a row that failed on it), ``handed_back`` and ``error`` (the last)."""
store_available = Signal("store_available")
"""A paused poller's probe of the store succeeded and it receives again: ``paused_s``."""
