"""The shop's tasks: an example cloudq app, written the way Celery's documentation writes one.

Run it on your machine, no AWS account needed (from the repository's root)::

    cloudq dev -A examples.shop.tasks:app        # local AWS + a worker; prints an export line
    python -m examples.shop.client               # in a second shell, after that export

or both at once with ``python examples/run_demo.py``.

Task names are given explicitly, so they stay the same however the module is imported
(``shop.tasks`` or ``examples.shop.tasks``): a sender and a worker must agree on them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import cloudq
from cloudq import crontab

logger = logging.getLogger(__name__)

app = cloudq.App("shop")

app.conf.beat_schedule = {
    # sent by `cloudq beat` (and by `cloudq dev`), or by EventBridge after `cloudq schedule sync`
    "heartbeat": {"task": "shop.tasks.add", "schedule": 2.0, "args": (1, 1)},
    "daily-report": {
        "task": "shop.tasks.report", "schedule": crontab(hour=7, minute=30),
        "kwargs": {"kind": "sales"}, "options": {"queue": "reports"},
    },
}
app.conf.beat_timezone = "Europe/Berlin"


@app.task(name="shop.tasks.add")
def add(x: int, y: int) -> int:
    """The hello world of task queues."""
    return x + y


@app.task(
    name="shop.tasks.send_email",
    bind=True,
    max_retries=3,
    autoretry_for=(IOError,),
    retry_backoff=True,  # wait 1 s, then 2 s, ... between attempts
    retry_backoff_max=2,  # (kept short so the demo is quick; the default is 600 s)
    retry_jitter=False,
)
def send_email(
    self: cloudq.Task[Any, Any], to: str, subject: str, body: str = ""
) -> dict[str, Any]:
    """Send an email; the (pretend) mail server is busy on the first two attempts.

    Any IOError (ConnectionError is one) makes cloudq retry the task automatically.
    """
    attempt = self.request.retries + 1
    if attempt <= 2:
        raise ConnectionError(f"mail server busy (attempt {attempt})")
    logger.info("sent %r to %s on attempt %d", subject, to, attempt)
    return {"to": to, "subject": subject, "attempts": attempt}


@app.task(name="shop.tasks.report")
def report(kind: str) -> str:
    """A periodic task: the daily report, at 07:30 Berlin time."""
    return f"{kind} report done"


@app.task(name="shop.tasks.apply_coupon")
def apply_coupon(order_id: int, code: str) -> float:
    """Fails for every code: shows FAILURE, the exception and its traceback."""
    raise ValueError(f"coupon {code!r} has expired (order {order_id})")


@app.task(name="shop.tasks.import_catalog", bind=True)
def import_catalog(self: cloudq.Task[Any, Any], items: int) -> dict[str, int]:
    """A long job that reports its progress with ``update_state``."""
    for done in range(1, items + 1):
        time.sleep(0.3)  # pretend to import one item
        self.update_state(state="PROGRESS", meta={"current": done, "total": items})
    return {"imported": items}
