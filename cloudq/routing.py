"""Which queue a task message goes to, and the priority bands behind a queue name.

A queue name the user writes (``"emails"``) stands for up to three SQS queues, one per
priority band: ``emails-high`` (priority 7-9), ``emails`` (4-6, or no priority) and
``emails-low`` (0-3). Higher numbers are more urgent, as in AMQP. Pollers ask the bands
high first. FIFO queues keep their order instead and have a single band.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cloudq.errors import ConfigError, EncodeError
from cloudq.transports.base import is_fifo

HIGH_MIN = 7
LOW_MAX = 3
BAND_SUFFIXES = ("-high", "", "-low")


def band_queue(queue: str, priority: int | None) -> str:
    """The SQS queue (logical name) that carries ``queue`` messages of this priority."""
    if priority is None:
        return queue
    if is_fifo(queue):
        raise EncodeError(
            f"priority={priority} cannot be used on FIFO queue {queue!r}: FIFO queues keep order"
        )
    if priority >= HIGH_MIN:
        return f"{queue}-high"
    if priority <= LOW_MAX:
        return f"{queue}-low"
    return queue


def bands(queue: str) -> list[str]:
    """Every band of ``queue``, most urgent first."""
    if is_fifo(queue):
        return [queue]
    return [queue + suffix for suffix in BAND_SUFFIXES]


def polling_tiers(queues: Iterable[str]) -> list[list[str]]:
    """The bands of several queues grouped by urgency: every high band, then every normal band
    and FIFO queue (a FIFO queue has no priority), then every low band. A poller serves a tier
    only when the tiers above it have no work (``cloudq.runners.poller``)."""
    names = list(dict.fromkeys(queues))
    tiers: list[list[str]] = [[] for _ in BAND_SUFFIXES]
    for name in names:
        if is_fifo(name):
            tiers[BAND_SUFFIXES.index("")].append(name)
        else:
            for tier, band in zip(tiers, bands(name), strict=True):
                tier.append(band)
    return tiers


def polling_order(queues: Iterable[str]) -> list[str]:
    """The bands of several queues in the order a poller should prefer them."""
    return [band for tier in polling_tiers(queues) for band in tier]


Route = dict[str, Any]


def _as_route(value: Any, where: str) -> Route | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"queue": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"task_routes: {where} returned {value!r}; expected a queue name or dict")


class Router:
    """Celery's ``task_routes``: a dict of glob patterns, router functions, or a list of both."""

    def __init__(
        self, routes: Mapping[str, Any] | Sequence[Any] | Callable[..., Any] | None
    ) -> None:
        if routes is None:
            routes = []
        elif isinstance(routes, Mapping) or callable(routes):
            routes = [routes]
        self._routes: list[Mapping[str, Any] | Callable[..., Any]] = list(routes)
        for route in self._routes:
            if not (isinstance(route, Mapping) or callable(route)):
                raise ConfigError(f"task_routes entry {route!r} is neither a dict nor a function")

    def route(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Mapping[str, Any]
    ) -> Route | None:
        """The first route that matches ``name``, or None."""
        for route in self._routes:
            if callable(route):
                found = _as_route(route(name, args, kwargs, options), f"router {route!r}")
                if found:
                    return found
                continue
            for pattern, target in route.items():
                if fnmatch.fnmatchcase(name, pattern):
                    return _as_route(target, f"pattern {pattern!r}")
        return None
