"""A client of the shop: sends a few tasks and shows what happens to them.

It needs a worker and the address of the local AWS it uses. From the repository's root::

    cloudq dev -A examples.shop.tasks:app          # shell 1: prints an `export ...` line
    export CLOUDQ_ENDPOINT_URL=http://127.0.0.1:PORT   # shell 2: paste that line, then
    python -m examples.shop.client

Exits with status 1 if a task did not behave as described here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudq

from .tasks import add, app, apply_coupon, import_catalog, send_email

TIMEOUT_S = 30.0
POLL_S = 0.1


@dataclass
class Example:
    """One task sent, and what we saw of it while it ran."""

    title: str
    result: cloudq.AsyncResult[Any]
    explain: str
    sent_at: float = field(default_factory=time.monotonic)
    states: list[str] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    took_s: float | None = None

    def look(self) -> None:
        """Record the task's state (and progress) if it changed since the last look."""
        state = self.result.state
        if not self.states or self.states[-1] != state:
            self.states.append(state)
        if state == "PROGRESS":
            info = self.result.info
            if not self.progress or self.progress[-1] != info:
                self.progress.append(info)
        if state in cloudq.states.READY_STATES:
            self.took_s = time.monotonic() - self.sent_at


def send_all() -> list[Example]:
    print("Sending five tasks:")
    sends: list[tuple[str, str, Callable[[], cloudq.AsyncResult[Any]]]] = [
        ("add.delay(2, 3)", "runs at once", lambda: add.delay(2, 3)),
        ("add.apply_async((10, 20), countdown=2)", "waits 2 s in SQS before it runs",
         lambda: add.apply_async((10, 20), countdown=2)),
        ("send_email.delay('ann@example.com', 'Your order has shipped')",
         "the mail server is busy twice; autoretry_for=(IOError,) retries it",
         lambda: send_email.delay("ann@example.com", "Your order has shipped")),
        ("apply_coupon.delay(1001, 'SPRING24')", "raises ValueError",
         lambda: apply_coupon.delay(1001, "SPRING24")),
        ("import_catalog.delay(5)", "reports PROGRESS with self.update_state",
         lambda: import_catalog.delay(5)),
    ]
    examples = []
    for title, explain, send in sends:
        examples.append(Example(title, send(), explain))
        print(f"  {title:<64} task id {examples[-1].result.id}", flush=True)
    return examples


def watch(examples: list[Example]) -> None:
    """Look at every task ten times a second until all have finished (or time is up)."""
    print("\nWaiting for the worker...", flush=True)
    deadline = time.monotonic() + TIMEOUT_S
    waiting = list(examples)
    while waiting and time.monotonic() < deadline:
        for example in waiting:
            example.look()
        waiting = [example for example in waiting if example.took_s is None]
        time.sleep(POLL_S)


# -- what each example should show ----------------------------------------------------------------
def check_add(example: Example, expected: int) -> list[str]:
    value = example.result.get(timeout=1)
    if value != expected:
        raise AssertionError(f"expected {expected}, got {value!r}")
    return [f"result: {value!r}"]


def check_email(example: Example) -> list[str]:
    value = example.result.get(timeout=1)
    if value.get("attempts") != 3:
        raise AssertionError(f"expected success on attempt 3, got {value!r}")
    return [f"result: {value!r}", "(two ConnectionErrors, retried after 1 s and 2 s)"]


def check_coupon(example: Example) -> list[str]:
    try:
        example.result.get(timeout=1)
    except ValueError as exc:  # the task's own exception type, raised here by get()
        ending = (example.result.traceback or "").strip().splitlines()[-3:]
        return [f"result.get() raised {type(exc).__name__}: {exc}",
                "result.traceback ends with:", *(f"  {line}" for line in ending)]
    raise AssertionError("expected result.get() to raise ValueError")


def check_catalog(example: Example) -> list[str]:
    value = example.result.get(timeout=1)
    if value != {"imported": 5}:
        raise AssertionError(f"expected {{'imported': 5}}, got {value!r}")
    seen = ", ".join(f"{p['current']}/{p['total']}" for p in example.progress) or "none seen"
    return [f"progress seen: {seen}", f"result: {value!r}"]


CHECKS: list[Callable[[Example], list[str]]] = [
    lambda e: check_add(e, 5), lambda e: check_add(e, 30), check_email, check_coupon,
    check_catalog,
]


def report(examples: list[Example]) -> int:
    """Print what each task did; return how many did not do what they should."""
    problems = 0
    for number, (example, check) in enumerate(zip(examples, CHECKS, strict=True), start=1):
        print(f"\n{number}. {example.title}\n   ({example.explain})")
        took = f" (done {example.took_s:.1f} s after sending)" if example.took_s else ""
        print(f"   states seen: {' -> '.join(example.states)}{took}")
        try:
            lines = check(example)
        except Exception as exc:
            problems += 1
            lines = [f"UNEXPECTED: {type(exc).__name__}: {exc}"]
        for line in lines:
            print(f"   {line}")
    return problems


def main() -> int:
    endpoint = app.settings.endpoint_url
    if not endpoint:
        print("CLOUDQ_ENDPOINT_URL is not set. Start `cloudq dev -A examples.shop.tasks:app` "
              "and run the `export CLOUDQ_ENDPOINT_URL=...` line it prints.", file=sys.stderr)
        return 2
    print(f"cloudq shop demo, using the local AWS at {endpoint}\n")
    examples = send_all()
    watch(examples)
    problems = report(examples)
    if problems:
        print(f"\n{problems} of {len(examples)} tasks did not behave as expected.")
        return 1
    print(f"\nAll {len(examples)} tasks behaved as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
