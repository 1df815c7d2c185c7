"""How an outcome fits in its ``task#<id>`` item: DynamoDB refuses items over 400 KB.

I/O-free. Error texts (exception message, reason, name) are cut with a marker; a traceback
keeps its head and its tail (the tail holds the raising frame and the error line), each line
cut on its own first. A result is its JSON text in ``result``; with ``result_compression="gzip"``
a result of at least ``COMPRESS_MIN_BYTES`` is stored gzip+base64, marked by
``result_encoding``. A result still over ``MAX_RESULT_BYTES`` does not go in the item: it is put
in the payload bucket and the item holds a claim check, ``result_s3: {"bucket", "key"}``
(``cloudq.results`` does that I/O, and follows the claim check when reading).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from cloudq.errors import EncodeError, ResultError, ResultTooLarge

MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's largest item: attribute names and values, in bytes."""
MAX_RESULT_BYTES = 350_000
"""The largest result text kept in the item; leaves room for the other fields."""
MAX_TEXT_CHARS = 4_000
"""Exception messages and reasons beyond this are cut (they may echo a whole bad value)."""
MAX_NAME_CHARS = 500
MAX_EXC_ARGS_BYTES = 16_000
"""Exception arguments (JSON) beyond this are replaced by the cut message."""
TRACEBACK_HEAD_CHARS = 8_000
TRACEBACK_TAIL_CHARS = 24_000
TRACEBACK_LINE_CHARS = 2_000
COMPRESS_MIN_BYTES = 1_024
"""``result_compression`` leaves smaller results as plain JSON (gzip would not pay)."""

CUT_MARKER = "…[cut"
"""Starts the marker that stands where text was cut: ``…[cut, 12,345 characters]…`` (the
length of the whole text), as ``cloudq.redaction`` marks a quoted value."""
RESULT_FIELD = "result"
ENCODING_FIELD = "result_encoding"
CLAIM_FIELD = "result_s3"
GZIP = "gzip"


def cut(text: str, limit: int, *, tail: int = 0) -> str:
    """``text`` if it has at most ``limit`` characters; else its head and its last ``tail``
    characters around a marker that gives the whole text's length."""
    if len(text) <= limit:
        return text
    tail = min(tail, limit // 2)
    head = limit - tail
    marker = f"{CUT_MARKER}, {len(text):,} characters]"
    return f"{text[:head]}{marker}…{text[len(text) - tail:]}" if tail else text[:head] + marker


def cut_traceback(text: str) -> str:
    """A traceback that fits: long lines cut, then the middle lines dropped, keeping the first
    ``TRACEBACK_HEAD_CHARS`` and the last ``TRACEBACK_TAIL_CHARS`` (the raising frame)."""
    lines = [cut(line, TRACEBACK_LINE_CHARS, tail=TRACEBACK_LINE_CHARS // 4)
             for line in text.splitlines()]
    if sum(len(line) + 1 for line in lines) <= TRACEBACK_HEAD_CHARS + TRACEBACK_TAIL_CHARS:
        return "\n".join(lines)
    head = _lines_within(lines, TRACEBACK_HEAD_CHARS)
    tail = _lines_within(lines[::-1], TRACEBACK_TAIL_CHARS)[::-1]
    dropped = len(lines) - len(head) - len(tail)
    return "\n".join([*head, f"  {CUT_MARKER}, {dropped:,} lines]…", *tail])


def _lines_within(lines: list[str], budget: int) -> list[str]:
    kept: list[str] = []
    for line in lines:
        budget -= len(line) + 1
        if budget < 0:
            break
        kept.append(line)
    return kept


def fit_texts(item: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` with its free texts cut to their limits (every other field left as it is)."""
    fitted = dict(item)
    for name, value in item.items():
        if not isinstance(value, str) or name in (RESULT_FIELD, "exc_args", "exc_type"):
            continue
        if name == "traceback":
            fitted[name] = cut_traceback(value)
        else:
            limit = MAX_NAME_CHARS if name == "name" else MAX_TEXT_CHARS
            fitted[name] = cut(value, limit, tail=limit // 10)
    return fitted


# -- results ------------------------------------------------------------------------------------
def pack(text: str, compression: str | None) -> tuple[str, dict[str, Any]]:
    """The text to store for a result's JSON ``text``, and the fields that say how to read it."""
    if compression != GZIP or len(text.encode()) < COMPRESS_MIN_BYTES:
        return text, {}
    packed = base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode("ascii")
    return packed, {ENCODING_FIELD: GZIP}


def unpack(text: str, item: Mapping[str, Any]) -> str:
    """The JSON text of a stored result (``pack`` undone)."""
    encoding = item.get(ENCODING_FIELD)
    if encoding is None:
        return text
    if encoding != GZIP:
        raise ResultError(f"result stored with unknown encoding {encoding!r}")
    try:
        return gzip.decompress(base64.b64decode(text)).decode()
    except (OSError, EOFError, binascii.Error, zlib.error, UnicodeDecodeError) as exc:
        raise ResultError(f"stored gzip result is corrupt: {exc}") from exc


def claim_of(item: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(bucket, key) of a result kept in S3, or None when the item holds it (or has none)."""
    ref = (item or {}).get(CLAIM_FIELD)
    if not isinstance(ref, Mapping):
        return None
    return str(ref["bucket"]), str(ref["key"])


def too_large(task_id: str, size: int, compressed: bool) -> ResultTooLarge:
    how = " after gzip" if compressed else ""
    hint = "" if compressed else ", or result_compression='gzip' if it compresses well"
    return ResultTooLarge(
        f"the result of task {task_id} is too large to store: {size:,} bytes of JSON{how}, and a "
        f"DynamoDB item holds at most {MAX_RESULT_BYTES:,}; set payload_bucket to keep large "
        f"results in S3{hint}, or return a reference to where the data is")


# -- size ---------------------------------------------------------------------------------------
def item_size(item: Mapping[str, Any]) -> int:
    """DynamoDB's size of ``item`` in bytes (names and values, as its documentation counts)."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | Decimal):
        return 1 + (len(str(value).lstrip("-").replace(".", "")) + 1) // 2
    if isinstance(value, Mapping):
        return 3 + sum(len(str(k).encode()) + 1 + value_size(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return 3 + sum(1 + value_size(v) for v in value)
    return len(str(value).encode())


def check_fits(task_id: str, item: Mapping[str, Any]) -> None:
    """Raise EncodeError naming the largest fields if ``item`` is over DynamoDB's limit."""
    size = item_size(item)
    if size <= MAX_ITEM_BYTES:
        return
    largest = sorted(item, key=lambda name: value_size(item[name]), reverse=True)[:3]
    raise EncodeError(f"the record of task {task_id} would be {size:,} bytes, over DynamoDB's "
                      f"{MAX_ITEM_BYTES:,}-byte item limit (largest fields: {', '.join(largest)})")
