"""Results, revokes and exception records, built on the store's primitives.

Key layout (DESIGN.md): ``task#<id>`` holds a result, ``revoked#<id>`` a revoke. Values are
kept as JSON strings (``cloudq.serialization``), so what a task returns comes back with the
same types and DynamoDB's number conversions never touch it. What makes a record fit in one
item (cut texts, compressed results, results kept in S3) is ``cloudq.records``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloudq import records, serialization, states
from cloudq.errors import ConfigError, EncodeError, PayloadMissing, ResultError, ResultTooLarge
from cloudq.message import new_id, utcnow
from cloudq.records import CUT_MARKER, MAX_ITEM_BYTES, MAX_RESULT_BYTES, item_size
from cloudq.serialization import exception_path, rebuild_exception
from cloudq.stores.base import Item, Store

if TYPE_CHECKING:
    from cloudq.payloads import S3Payloads
    from cloudq.serialization import Decoding

__all__ = ["CUT_MARKER", "MAX_ITEM_BYTES", "MAX_RESULT_BYTES", "ResultBackend", "ResultMeta",
           "item_size", "revoked_key", "task_key"]

logger = logging.getLogger(__name__)


def task_key(task_id: str) -> str:
    return f"task#{task_id}"


def revoked_key(task_id: str) -> str:
    return f"revoked#{task_id}"


def result_object_key(task_id: str) -> str:
    """Where a result too big for its item goes in the payload bucket (under ``payloads/``,
    like message bodies: same lifecycle rule, same grants)."""
    return f"payloads/{task_id}/result-{new_id()}.json"


@dataclass(frozen=True)
class ResultMeta:
    """What the store knows about one task."""

    task_id: str
    state: str = states.PENDING
    stored: Any = None
    """The return value (SUCCESS), the meta dict (custom states), or the exception."""
    traceback: str | None = None
    date_done: datetime | None = None
    name: str | None = None
    retries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    loader: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    """Fetches a result kept in S3 on first use of ``result`` (so polling a state does not)."""

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    @property
    def result(self) -> Any:
        """The return value (SUCCESS), the meta dict (custom states), or the exception."""
        if self.loader is not None:
            object.__setattr__(self, "stored", self.loader())
            object.__setattr__(self, "loader", None)
        return self.stored


class ResultBackend:
    """Reads and writes task results and revokes."""

    def __init__(self, store: Store, *, expires_s: int, payload_bucket: str | None = None,
                 compression: str | None = None,
                 payloads: Callable[[str], S3Payloads] | None = None,
                 decoding: Callable[[str | None], Decoding] | None = None) -> None:
        self.store = store
        self._decoding = decoding
        """The rules for decoding a task's result (``App.decoding``): no model class is ever
        imported, only those its task names or the app registered are rebuilt."""
        self.expires_s = expires_s
        self.payload_bucket = payload_bucket
        """Where results too big for their item go; None: such a result is a FAILURE."""
        self.compression = compression
        self._payloads = payloads

    # -- results -----------------------------------------------------------------------------------
    def item_for(
        self,
        task_id: str,
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
        """The record of one outcome, made to fit one item: texts cut, a large result
        compressed (``result_compression``) or put in S3 (``payload_bucket``); EncodeError
        (ResultTooLarge) for a result that cannot be stored."""
        item: Item = {"state": str(state), "retries": retries, **extra}
        if name:
            item["name"] = name
        if exc is not None:
            item.update(self._exception_fields(exc))
        if traceback:
            item["traceback"] = traceback
        item = records.fit_texts(item)
        value = meta if meta is not None else result
        if value is not None:
            item.update(self._result_fields(task_id, value))
        if state in states.READY_STATES:
            item["date_done"] = utcnow().isoformat()
        records.check_fits(task_id, item)
        return item

    @staticmethod
    def _exception_fields(exc: BaseException) -> Item:
        message = records.cut(str(exc), records.MAX_TEXT_CHARS, tail=records.MAX_TEXT_CHARS // 10)
        try:
            args = serialization.dumps(list(exc.args))
        except EncodeError:
            args = serialization.dumps([message])
        if len(args.encode()) > records.MAX_EXC_ARGS_BYTES:
            args = serialization.dumps([message])
        return {"exc_type": exception_path(exc), "exc_message": message, "exc_args": args}

    def _result_fields(self, task_id: str, value: Any) -> Item:
        text, fields = records.pack(serialization.dumps(value), self.compression)
        size = len(text.encode())
        if size <= MAX_RESULT_BYTES:
            return {records.RESULT_FIELD: text, **fields}
        if self.payload_bucket is None:
            raise records.too_large(task_id, size, compressed=bool(fields))
        key = result_object_key(task_id)
        try:
            self._bucket(self.payload_bucket).put(key, text)
        except ConfigError as exc:  # no such bucket: as lasting as no bucket at all
            raise ResultTooLarge(f"the result of task {task_id} ({size:,} bytes) is too large "
                                 f"for its item, and {exc.message}") from exc
        logger.debug("result of task %s (%d bytes) stored in s3://%s/%s",
                     task_id, size, self.payload_bucket, key)
        return {records.CLAIM_FIELD: {"bucket": self.payload_bucket, "key": key}, **fields}

    def _bucket(self, bucket: str) -> S3Payloads:
        if self._payloads is None:
            raise ResultError(f"no S3 access to read or write results in bucket {bucket!r}")
        return self._payloads(bucket)

    def save(self, task_id: str, state: str, result: Any = None, **fields: Any) -> None:
        """Write the state (and result) of ``task_id``."""
        self.save_item(task_id, self.item_for(task_id, state, result, **fields))

    def save_item(self, task_id: str, item: Item) -> None:
        self.store.put(task_key(task_id), item, ttl_s=self.expires_s)

    def save_if_absent(self, task_id: str, state: str, **fields: Any) -> bool:
        return self.store.put_if_absent(
            task_key(task_id), self.item_for(task_id, state, **fields), ttl_s=self.expires_s
        )

    def get(self, task_id: str) -> ResultMeta:
        return self.meta_from(task_id, self.store.get(task_key(task_id)))

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        items = self.store.get_many([task_key(t) for t in task_ids])
        return {t: self.meta_from(t, items.get(task_key(t))) for t in task_ids}

    def forget(self, task_id: str) -> None:
        self.store.delete(task_key(task_id))

    def fetch(self, task_id: str, bucket: str, key: str) -> str:
        """The text of a result kept in S3."""
        try:
            return self._bucket(bucket).get(key)
        except PayloadMissing as exc:
            raise ResultError(f"the result of task {task_id} was kept in s3://{bucket}/{key}, "
                              "which no longer exists (expired or deleted)") from exc

    def meta_from(self, task_id: str, item: Item | None, *,
                  payload: str | None = None) -> ResultMeta:
        """The record in ``item``. A result kept in S3 is read from ``payload`` when the caller
        fetched it (the awaitable face), else fetched on first use of ``.result``."""
        if item is None:
            return ResultMeta(task_id)
        state = str(item.get("state", states.PENDING))
        result: Any = None
        loader: Callable[[], Any] | None = None
        claim = records.claim_of(item)
        if "exc_type" in item:
            args = serialization.loads(item["exc_args"]) if "exc_args" in item else []
            result = rebuild_exception(item["exc_type"], item.get("exc_message", ""), args)
        elif claim is not None and payload is None:
            loader = lambda: self._decoded(item, self.fetch(task_id, *claim))  # noqa: E731
        elif claim is not None or records.RESULT_FIELD in item:
            result = self._decoded(item, payload if claim else item[records.RESULT_FIELD])
        done = item.get("date_done")
        return ResultMeta(
            task_id=task_id, state=state, stored=result, traceback=item.get("traceback"),
            date_done=datetime.fromisoformat(done) if done else None, name=item.get("name"),
            retries=int(item.get("retries", 0)),
            extra={k: v for k, v in item.items() if k in ("reason",)}, loader=loader,
        )

    def _decoded(self, item: Item, text: str | None) -> Any:
        name = item.get("name")
        rules = self._decoding(name if isinstance(name, str) else None) if self._decoding \
            else serialization.LENIENT
        return serialization.loads(records.unpack(text or "null", item), rules)

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
