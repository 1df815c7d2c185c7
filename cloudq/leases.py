"""Run leases of ``idempotent=True`` tasks: at most one copy of an attempt runs at a time.

SQS may deliver one message twice, and both copies may be received at the same moment. Before
running, a copy takes the lease ``lease#<task id>#<attempt>`` with one conditional write
(``put_if_absent``: nothing live there). The lease lives as long as the attempt may run, then
expires on its own (``ttl``), so a copy whose worker crashed holds it no longer than that. A
copy that finds it held is not run now: it comes back when the lease ends, and by then
finds the first copy's SUCCESS (and is acked without running) or takes the lease itself.

Keyed by attempt, so a retry (``retries + 1``) never waits behind its own earlier attempt,
and a success needs no second write to release anything.
"""

from __future__ import annotations

import math
from datetime import datetime

from cloudq.stores.base import TTL_FIELD, Store


def lease_key(task_id: str, attempt: int) -> str:
    return f"lease#{task_id}#{attempt}"


def lease_length_s(*, visibility_timeout_s: int, time_limits_s: list[float],
                   seconds_left_s: float | None) -> int:
    """How long a copy holds the lease: until a Lambda invocation's end when there is one (the
    body cannot outlive it), else the longer of the visibility timeout and the time limit."""
    if seconds_left_s is not None:
        return max(1, math.ceil(seconds_left_s) + 1)
    return max(1, math.ceil(max([visibility_timeout_s, *time_limits_s])))


def take(store: Store, task_id: str, attempt: int, *, holder: str, lease_s: int,
         now: datetime) -> int:
    """Take the lease of one attempt; 0 if taken, else the seconds until it is free."""
    key = lease_key(task_id, attempt)
    if store.put_if_absent(key, {"holder": holder, "at": now.isoformat()}, ttl_s=lease_s):
        return 0
    held = store.get(key)
    if held is None:  # it expired between the two calls
        return 1
    return max(1, math.ceil(float(held[TTL_FIELD]) - now.timestamp()))
