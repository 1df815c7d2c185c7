"""Task rate limits (``rate_limit="10/s"``), shared by every worker through the store.

Each task name has a counter per fixed window (``rate#<task>#<window>``); a message that
finds its window full is re-sent to run in a later window instead of waiting in a worker.
Cost: one conditional-free DynamoDB update per rate-limited task.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from cloudq.errors import ConfigError
from cloudq.stores.base import Store

_UNITS_S = {"s": 1, "m": 60, "h": 3600}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` starts per ``window_s`` seconds."""

    count: int
    window_s: int

    @classmethod
    def parse(cls, text: str | float | None) -> RateLimit | None:
        """``"10/s"``, ``"100/m"``, ``"1000/h"``, or a number (per second). None: no limit."""
        if text is None or text == "" or text == 0:
            return None
        match = _PATTERN.match(str(text))
        if match is None:
            raise ConfigError(
                f"rate_limit {text!r} is not of the form '10/s', '100/m' or '1000/h'"
            )
        number, unit = float(match.group(1)), match.group(2) or "s"
        window_s = _UNITS_S[unit]
        while number < 1 and window_s < 3600:  # "0.5/s" is one per two seconds
            number, window_s = number * 60, window_s * 60
        if number < 1:
            raise ConfigError(f"rate_limit {text!r} is below one per hour")
        return cls(count=int(number), window_s=window_s)

    def acquire(self, store: Store, task_name: str, now: float | None = None) -> float:
        """Take a slot; return 0 to run now, or the seconds to wait for a free window."""
        now = time.time() if now is None else now
        window = int(now // self.window_s)
        taken = store.increment(f"rate#{task_name}#{window}", "count",
                                ttl_s=self.window_s * 2 + 60)
        if taken <= self.count:
            return 0.0
        windows_ahead = (taken - 1) // self.count
        return (window + windows_ahead) * self.window_s - now
