"""Terminating running tasks: the poller's watch on ``revoke(terminate=True)``.

A revoke is an item in the store (``revoked#<id>``, with a ``terminate`` flag); nothing pushes
it to the worker running the task. So while tasks run, a daemon thread reads the revokes of
every running task every ``worker_revoke_check_interval`` seconds, all in one ``get_many``
(one BatchGetItem per 100 running tasks), and asks the pool to terminate those flagged
``terminate``. An idle worker makes no calls; a revoke without ``terminate`` is left to the
precheck of the next delivery, as before. The watch has its own thread so that a slow store
never holds up the housekeeper's visibility heartbeats.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cloudq import message as wire
from cloudq.results import revoked_key

if TYPE_CHECKING:
    from cloudq.stores.base import Store
    from cloudq.transports.base import ReceivedMessage

logger = logging.getLogger(__name__)


def to_terminate(store: Store, task_ids: Sequence[str]) -> list[str]:
    """Those of ``task_ids`` revoked with ``terminate=True``, read in one ``get_many``."""
    if not task_ids:
        return []
    found = store.get_many([revoked_key(task_id) for task_id in task_ids])
    return [t for t in task_ids if found.get(revoked_key(t), {}).get("terminate")]


class RevocationWatch:
    """Every ``interval_s`` while ``running()`` returns messages, terminates the revoked ones.

    ``terminate(task_id)`` says whether the pool found the task running and began to stop it.
    """

    def __init__(self, store: Store, running: Callable[[], Sequence[ReceivedMessage]],
                 terminate: Callable[[str], bool], interval_s: float) -> None:
        self.store = store
        self.running = running
        self.terminate = terminate
        self.interval_s = interval_s
        self._closed = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, daemon=True, name="cloudq-revocations").start()

    def close(self) -> None:
        self._closed.set()

    def _loop(self) -> None:
        while not self._closed.wait(self.interval_s):
            messages = self.running()
            if messages:
                self.check(messages)

    def check(self, messages: Sequence[ReceivedMessage]) -> None:
        """Terminate the tasks of ``messages`` that were revoked with ``terminate=True``."""
        names: dict[str, str | None] = {}
        for message in messages:  # peek: the id is in every frame, even a claim check's
            task_id, name = wire.peek(message.body)
            if task_id:
                names[task_id] = name
        try:
            revoked = to_terminate(self.store, list(names))
        except Exception:
            logger.warning("could not read the revokes of %d running tasks", len(names),
                           exc_info=True)
            return
        for task_id in revoked:
            if self.terminate(task_id):
                logger.warning("task %s[%s] revoked with terminate=True: stopping it",
                               names[task_id], task_id)
