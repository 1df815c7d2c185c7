"""Routing: which queue (and priority band) a message goes to, and who wins when several say."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

import cloudq
from cloudq import message as wire
from cloudq.routing import Router, band_queue, bands, polling_order, polling_tiers

Queued = Callable[..., list[wire.Envelope]]


def queues_with_messages(app: cloudq.App) -> list[str]:
    transport = app.transport
    return [q for q in transport.queue_names() if transport.depth(q)]  # type: ignore[attr-defined]


def send_report(app: cloudq.App, **options: Any) -> None:
    app.send_task("shop.reports.daily", (), {}, **options)


# -- precedence ------------------------------------------------------------------------------------
def test_without_routes_messages_go_to_the_default_queue(
    make_app: Callable[..., cloudq.App],
) -> None:
    app = make_app(task_default_queue="work")

    send_report(app)

    assert queues_with_messages(app) == ["work"]


def test_a_matching_route_beats_the_default_queue(make_app: Callable[..., cloudq.App]) -> None:
    app = make_app(task_routes={"shop.reports.*": "reports", "shop.*": "shop"})

    send_report(app)

    assert queues_with_messages(app) == ["reports"]  # the first matching pattern wins


def test_the_tasks_own_queue_beats_a_route(make_app: Callable[..., cloudq.App]) -> None:
    app = make_app(task_routes={"shop.*": "shop"})
    daily = app.task(name="shop.reports.daily", queue="nightly")(lambda: None)

    daily.delay()

    assert queues_with_messages(app) == ["nightly"]


def test_apply_async_queue_beats_everything(make_app: Callable[..., cloudq.App]) -> None:
    app = make_app(task_routes={"shop.*": "shop"}, task_default_queue="work")
    daily = app.task(name="shop.reports.daily", queue="nightly")(lambda: None)

    daily.apply_async(queue="urgent")

    assert queues_with_messages(app) == ["urgent"]


def test_a_router_function_is_asked_with_celerys_arguments(
    make_app: Callable[..., cloudq.App],
) -> None:
    asked: list[tuple[Any, ...]] = []

    def by_customer(name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
                    options: Mapping[str, Any]) -> str | None:
        asked.append((name, tuple(args), dict(kwargs)))
        return "vip" if kwargs.get("customer") == "acme" else None

    app = make_app(task_routes=[by_customer, {"shop.*": "shop"}])

    app.send_task("shop.reports.daily", (1,), {"customer": "acme"})
    app.send_task("shop.reports.daily", (2,), {"customer": "bob"})

    assert asked[0] == ("shop.reports.daily", (1,), {"customer": "acme"})
    assert app.transport.depth("vip") == 1
    assert app.transport.depth("shop") == 1  # the function said None: the next route decides


def test_a_single_router_function_is_accepted_as_celery_does(
    make_app: Callable[..., cloudq.App],
) -> None:
    def to_reports(name: str, *rest: Any) -> str | None:
        return "reports" if name.startswith("shop.reports.") else None

    app = make_app(task_routes=to_reports)

    send_report(app)

    assert queues_with_messages(app) == ["reports"]
    assert app.known_queues() == ["default"]


def test_a_route_may_set_the_priority(make_app: Callable[..., cloudq.App]) -> None:
    app = make_app(task_routes={"shop.*": {"queue": "shop", "priority": 9}})

    send_report(app)

    assert queues_with_messages(app) == ["shop-high"]


def test_changing_task_routes_takes_effect_at_once(app: cloudq.App) -> None:
    send_report(app)
    app.conf.task_routes = {"shop.*": "shop"}

    send_report(app)

    assert app.transport.depth("default") == 1
    assert app.transport.depth("shop") == 1


def test_a_router_returning_nonsense_is_a_config_error(
    make_app: Callable[..., cloudq.App],
) -> None:
    app = make_app(task_routes=[lambda *a: 42])

    with pytest.raises(cloudq.ConfigError, match="returned 42"):
        send_report(app)


def test_a_route_entry_that_is_neither_dict_nor_function_is_a_config_error() -> None:
    with pytest.raises(cloudq.ConfigError, match="neither a dict nor a function"):
        Router(["shop.*"])


# -- priority bands --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("priority", "queue"),
    [(9, "work-high"), (7, "work-high"), (6, "work"), (4, "work"), (3, "work-low"),
     (0, "work-low"), (None, "work")],
)
def test_priority_picks_the_band_queue(
    make_app: Callable[..., cloudq.App], priority: int | None, queue: str
) -> None:
    app = make_app(task_default_queue="work")

    send_report(app, priority=priority)

    assert queues_with_messages(app) == [queue]


def test_task_priority_applies_when_the_call_gives_none(app: cloudq.App) -> None:
    urgent = app.task(name="shop.urgent", priority=8)(lambda: None)

    urgent.delay()
    urgent.apply_async(priority=1)

    assert app.transport.depth("default-high") == 1
    assert app.transport.depth("default-low") == 1


def test_default_priority_setting_applies_last(make_app: Callable[..., cloudq.App]) -> None:
    app = make_app(task_default_priority=0)

    send_report(app)

    assert queues_with_messages(app) == ["default-low"]


def test_priority_out_of_range_is_refused_before_io(app: cloudq.App) -> None:
    with pytest.raises(cloudq.ValidationError, match="priority"):
        send_report(app, priority=10)

    assert app.transport.calls == []  # type: ignore[attr-defined]


def test_priority_on_a_fifo_queue_is_refused_before_io(app: cloudq.App) -> None:
    with pytest.raises(cloudq.CloudqError, match="priority=5 cannot be used on FIFO queue"):
        send_report(app, queue="orders.fifo", priority=5)

    assert app.transport.calls == []  # type: ignore[attr-defined]


def test_retried_message_stays_in_its_band(
    app: cloudq.App, queued: Queued, drain: Callable[..., Any]
) -> None:
    @app.task(name="shop.flaky", bind=True)
    def flaky(self: cloudq.Task[Any, None]) -> None:
        raise self.retry(countdown=60)

    flaky.apply_async(priority=9)
    drain(app)

    [again] = queued(app, "default-high")
    assert again.retries == 1


def test_band_helpers() -> None:
    assert band_queue("q", None) == "q"
    assert band_queue("q", 9) == "q-high"
    assert band_queue("q", 0) == "q-low"
    assert bands("q") == ["q-high", "q", "q-low"]
    assert bands("q.fifo") == ["q.fifo"]


def test_pollers_ask_every_queues_urgent_band_first() -> None:
    assert polling_order(["a", "b.fifo", "c", "a"]) == [
        "a-high", "c-high", "a", "b.fifo", "c", "a-low", "c-low"]
    assert polling_tiers(["a", "b.fifo"]) == [["a-high"], ["a", "b.fifo"], ["a-low"]]


def test_app_lists_the_queues_its_settings_and_tasks_mention(
    make_app: Callable[..., cloudq.App],
) -> None:
    app = make_app(task_routes={"shop.*": "shop", "pdf.*": {"queue": "pdf"}})
    app.task(name="mail.send", queue="mail")(lambda: None)

    assert app.known_queues() == ["default", "mail", "shop", "pdf"]
    assert app.queues(["mail"]) == ["mail-high", "mail", "mail-low"]
