"""Built-in tasks every App has: ``map``/``starmap`` (one task over many arguments, as
Celery's xmap/xstarmap), ``collect`` (the body that gives a nested group one result) and
``fanout`` (the ticks of a sub-minute periodic task EventBridge sends once a minute)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.task import Task


def _call(app: App, task: Task[Any, Any], args: tuple[Any, ...]) -> Any:
    """Run ``task`` here on ``args`` checked (and typed) by its annotations, as a worker would."""
    if task.typing:
        args, kwargs = task.arguments.rebuild(args, {},
                                              show_values=app.settings.log_argument_values)
        return task(*args, **kwargs)
    return task(*args)


def register_builtins(app: App) -> None:
    @app.task(name="cloudq.map", typing=False)
    def map_(task: str, it: list[Any]) -> list[Any]:
        fn = app.task_for(task)  # only a registered task, with arguments checked as its own
        return [_call(app, fn, (item,)) for item in it]

    @app.task(name="cloudq.starmap", typing=False)
    def starmap(task: str, it: list[Any]) -> list[Any]:
        fn = app.task_for(task)
        return [_call(app, fn, tuple(args)) for args in it]

    @app.task(name="cloudq.collect", typing=False)
    def collect(results: list[Any]) -> list[Any]:
        return results

    @app.task(name="cloudq.fanout", bind=True, typing=False, ignore_result=True)
    def fanout(self: Task[Any, Any], name: str, task: str, args: list[Any],
               kwargs: dict[str, Any], options: dict[str, Any], every_s: int,
               copies: int) -> int:
        """Send ``copies`` ticks of a periodic task, ``every_s`` apart from this message's tick:
        how EventBridge (whole minutes) serves a 15-second schedule."""
        from cloudq.scheduler.fanout import send_ticks

        return send_ticks(app, self.request, name=name, task=task, args=args, kwargs=kwargs,
                          options=options, every_s=every_s, copies=copies)
