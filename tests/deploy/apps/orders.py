"""A second app for the deploy tests: FIFO queues, a router function, a payload bucket, no
schedules, rate limits, and a task with a time limit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cloudq


def route(name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
          options: Mapping[str, Any]) -> dict[str, str] | None:
    """Billing tasks go to the FIFO queue, in order."""
    if name.startswith("orders.billing."):
        return {"queue": "billing.fifo"}
    return None


app = cloudq.App(
    "orders",
    queue_prefix="orders-",
    result_table="orders-results",
    payload_bucket="orders-payloads",
    task_routes=[route, {"orders.mail.*": "mail"}],
    max_receive_count=3,
    lambda_batch_size=50,
    lambda_batching_window=2,
)


@app.task(name="orders.billing.charge", time_limit=120)
def charge(order_id: str, cents: int) -> str:
    return f"charged {cents} for {order_id}"


@app.task(name="orders.mail.confirm", rate_limit="5/s")
def confirm(order_id: str) -> str:
    return f"confirmed {order_id}"


@app.task(name="orders.mail.reminder", rate_limit="60/m")
def reminder(order_id: str) -> str:
    return f"reminded {order_id}"
