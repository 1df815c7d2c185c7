"""``GroupResult``: the results of a group's members, read in batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cloudq import states
from cloudq.errors import TaskRevokedError, TimeoutError
from cloudq.result import MAX_POLL_S, AsyncResult, waits

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.results import ResultMeta


class GroupResult:
    """Results of a group, in order. Every read is one BatchGetItem per 100 members."""

    def __init__(self, id: str, results: list[AsyncResult[Any]], app: App | None = None) -> None:
        if app is None:
            from cloudq.app import current_app

            app = current_app()
        self.id = id
        self.results = results
        self.app = app

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{len(self.results)} results]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult[Any]]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any]:
        return self.results[index]

    def _metas(self) -> list[ResultMeta]:
        ids = [r.id for r in self.results]
        found = self.app.backend.get_many(ids)
        return [found[i] for i in ids]

    def ready(self) -> bool:
        return all(m.ready for m in self._metas())

    def successful(self) -> bool:
        return all(m.state == states.SUCCESS for m in self._metas())

    def failed(self) -> bool:
        return any(m.state == states.FAILURE for m in self._metas())

    def completed_count(self) -> int:
        return sum(1 for m in self._metas() if m.state == states.SUCCESS)

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = MAX_POLL_S) -> list[Any]:
        """Wait for every member; return their results in order (raise the first failure)."""
        for pause in waits(timeout, interval):
            metas = self._metas()
            if all(m.ready for m in metas):
                return [self._value(m, propagate) for m in metas]
            if pause is None:
                raise self._timeout(metas, timeout)
            time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    join = get

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float = MAX_POLL_S) -> list[Any]:
        """``get`` from async code: awaits between polls instead of blocking the loop."""
        from cloudq.aio import aresult_meta
        from cloudq.results import task_key

        ids = [r.id for r in self.results]
        backend = self.app.backend
        for pause in waits(timeout, interval):
            found = await self.app.aio.get_items([task_key(i) for i in ids])
            metas = [backend.meta_from(i, found.get(task_key(i))) for i in ids]
            if all(m.ready for m in metas):
                metas = [await aresult_meta(self.app, i, found.get(task_key(i))) for i in ids]
                return [self._value(m, propagate) for m in metas]
            if pause is None:
                raise self._timeout(metas, timeout)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout(self, metas: list[ResultMeta], timeout: float | None) -> TimeoutError:
        waiting = sum(1 for m in metas if not m.ready)
        return TimeoutError(f"group {self.id}: {waiting} of {len(metas)} results not ready "
                            f"after {timeout}s")

    @staticmethod
    def _value(meta: ResultMeta, propagate: bool) -> Any:
        if propagate and meta.state == states.FAILURE:
            raise meta.result
        if propagate and meta.state == states.REVOKED:
            raise TaskRevokedError(f"task {meta.task_id} was revoked")
        return meta.result

    def save(self) -> None:
        """Store the group so ``GroupResult.restore(id)`` finds it (sent groups already are).

        A group that was sent as one has derived member ids and only its size is stored;
        results gathered by hand keep their own ids."""
        from cloudq.canvas.apply import member_id

        ids = [r.id for r in self.results]
        item: dict[str, Any] = {"size": len(ids)}
        if ids != [member_id(self.id, i) for i in range(len(ids))]:
            item["ids"] = ids
        self.app.store.put(f"group#{self.id}", item, ttl_s=self.app.backend.expires_s)

    def forget(self) -> None:
        for result in self.results:
            result.forget()
        self.app.store.delete(f"group#{self.id}")

    @classmethod
    def restore(cls, group_id: str, app: App | None = None) -> GroupResult | None:
        """The GroupResult of a group sent earlier, or None if unknown (or expired)."""
        from cloudq.canvas.apply import member_id

        if app is None:
            from cloudq.app import current_app

            app = current_app()
        item = app.store.get(f"group#{group_id}")
        if item is None:
            return None
        ids = item.get("ids") or [member_id(group_id, i) for i in range(int(item["size"]))]
        return cls(group_id, [AsyncResult(task_id, app=app) for task_id in ids], app=app)
