"""How values appear in reasons, error messages and log lines: cut short, or not at all.

Arguments may hold secrets and may be large, and what cloudq says about a bad one ends up in
dead-letter attributes, FAILURE records and logs. :func:`quote` is the one way a value is
shown there: its repr, cut after ``limit`` characters with a marker that says so, or, when
the app's ``log_argument_values`` setting is off (callers pass it as ``show``), only its type
and size. :func:`cut` shortens a text that is not a value (a name, another error's message).
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

LIMIT = 40
"""Characters of a value's repr shown before it is cut."""

TEXT_LIMIT = 200
"""Characters of a text (a name, an error message) kept before it is cut."""


def cut(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text``, or its first ``limit`` characters and a marker giving its full length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[cut, {len(text):,} characters]"


def quote(value: Any, *, show: bool = True, limit: int = LIMIT) -> str:
    """A value as it may appear in a reason, an error message or a log line.

    ``show=False`` (``log_argument_values=False``): ``<redacted str of 12,345 characters>``,
    nothing of the value itself."""
    if not show:
        return redacted(value)
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the error being reported
        return f"<{type(value).__name__} whose repr failed>"
    return cut(text, limit)


def redacted(value: Any) -> str:
    """The type and size of a value, nothing of its content."""
    kind = type(value).__name__
    if isinstance(value, str):
        return f"<redacted str of {len(value):,} characters>"
    if isinstance(value, bytes | bytearray):
        return f"<redacted {kind} of {len(value):,} bytes>"
    if isinstance(value, Sized):
        try:
            return f"<redacted {kind} of {len(value):,} items>"
        except Exception:  # a broken __len__: say what it is, no more
            pass
    return f"<redacted {kind}>"
