"""Results, revokes and exception records, built on the store's primitives.

Key layout (DESIGN.md): ``task#<id>`` holds a result, ``revoked#<id>`` a revoke. Values are
kept as JSON strings (``cloudq.serialization``), so what a task returns comes back with the
same types and DynamoDB's number conversions never touch it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudq import serialization, states
from cloudq.errors import EncodeError
from cloudq.message import utcnow
from cloudq.serialization import exception_path, rebuild_exception
from cloudq.stores.base import Item, Store

logger = logging.getLogger(__name__)

MAX_RESULT_BYTES = 350_000
"""DynamoDB items are at most 400 KB; leave room for the other fields."""


def task_key(task_id: str) -> str:
    return f"task#{task_id}"


def revoked_key(task_id: str) -> str:
    return f"revoked#{task_id}"


@dataclass(frozen=True)
class ResultMeta:
    """What the store knows about one task."""

    task_id: str
    state: str = states.PENDING
    result: Any = None
    """The return value (SUCCESS), the meta dict (custom states), or the exception."""
    traceback: str | None = None
    date_done: datetime | None = None
    name: str | None = None
    retries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES


class ResultBackend:
    """Reads and writes task results and revokes."""

    def __init__(self, store: Store, *, expires_s: int) -> None:
        self.store = store
        self.expires_s = expires_s

    # -- results -----------------------------------------------------------------------------------
    def item_for(
        self,
        state: str,
        result: Any = None,
        *,
        exc: BaseException | None = None,
        traceback: str | None = None,
        meta: Mapping[str, Any] | None = None,
        name: str | None = None,
        retries: int = 0,
        **extra: Any,
    ) -> Item:
        item: Item = {"state": str(state), "retries": retries, **extra}
        if name:
            item["name"] = name
        if exc is not None:
            item["exc_type"] = exception_path(exc)
            item["exc_message"] = str(exc)
            try:
                item["exc_args"] = serialization.dumps(list(exc.args))
            except EncodeError:
                item["exc_args"] = serialization.dumps([str(exc)])
        if traceback:
            item["traceback"] = traceback[-20_000:]
        value = meta if meta is not None else result
        if value is not None:
            encoded = serialization.dumps(value)
            if len(encoded.encode()) > MAX_RESULT_BYTES:
                raise EncodeError(
                    f"result of {len(encoded.encode())} bytes is over the {MAX_RESULT_BYTES}-byte "
                    "limit of a DynamoDB item; store large results elsewhere (e.g. S3) and "
                    "return a reference"
                )
            item["result"] = encoded
        if state in states.READY_STATES:
            item["date_done"] = utcnow().isoformat()
        return item

    def save(self, task_id: str, state: str, result: Any = None, **fields: Any) -> None:
        """Write the state (and result) of ``task_id``."""
        self.save_item(task_id, self.item_for(state, result, **fields))

    def save_item(self, task_id: str, item: Item) -> None:
        self.store.put(task_key(task_id), item, ttl_s=self.expires_s)

    def save_if_absent(self, task_id: str, state: str, **fields: Any) -> bool:
        return self.store.put_if_absent(
            task_key(task_id), self.item_for(state, **fields), ttl_s=self.expires_s
        )

    def get(self, task_id: str) -> ResultMeta:
        return self.meta_from(task_id, self.store.get(task_key(task_id)))

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        items = self.store.get_many([task_key(t) for t in task_ids])
        return {t: self.meta_from(t, items.get(task_key(t))) for t in task_ids}

    def forget(self, task_id: str) -> None:
        self.store.delete(task_key(task_id))

    @staticmethod
    def meta_from(task_id: str, item: Item | None) -> ResultMeta:
        if item is None:
            return ResultMeta(task_id)
        state = str(item.get("state", states.PENDING))
        result: Any = None
        if "exc_type" in item:
            args = serialization.loads(item["exc_args"]) if "exc_args" in item else []
            result = rebuild_exception(item["exc_type"], item.get("exc_message", ""), args)
        elif "result" in item:
            result = serialization.loads(item["result"])
        done = item.get("date_done")
        return ResultMeta(
            task_id=task_id, state=state, result=result, traceback=item.get("traceback"),
            date_done=datetime.fromisoformat(done) if done else None, name=item.get("name"),
            retries=int(item.get("retries", 0)),
            extra={k: v for k, v in item.items() if k in ("reason",)},
        )

    # -- revokes -----------------------------------------------------------------------------------
    def revoke(self, task_id: str, *, terminate: bool = False, reason: str = "revoked") -> None:
        """Mark ``task_id`` revoked; a worker that receives it will not run it."""
        self.store.put(
            revoked_key(task_id),
            {"at": utcnow().isoformat(), "terminate": terminate, "reason": reason},
            ttl_s=self.expires_s,
        )
        # Make it visible to AsyncResult at once unless the task has already started.
        self.save_if_absent(task_id, states.REVOKED, reason=reason)

    def revocation(self, task_id: str) -> Item | None:
        return self.store.get(revoked_key(task_id))
