"""Built-in tasks every App has: ``map``/``starmap`` (one task over many arguments, as
Celery's xmap/xstarmap) and ``collect`` (the body that gives a nested group one result)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudq.app import App


def register_builtins(app: App) -> None:
    @app.task(name="cloudq.map", typing=False)
    def map_(task: str, it: list[Any]) -> list[Any]:
        fn = app.task_for(task)
        return [fn(item) for item in it]

    @app.task(name="cloudq.starmap", typing=False)
    def starmap(task: str, it: list[Any]) -> list[Any]:
        fn = app.task_for(task)
        return [fn(*args) for args in it]

    @app.task(name="cloudq.collect", typing=False)
    def collect(results: list[Any]) -> list[Any]:
        return results
