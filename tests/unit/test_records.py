"""The task record fits one DynamoDB item (issue 11: 4, 13): texts cut with a marker, tracebacks
keep head and tail, results compressed when asked; with the in-memory store."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import cloudq
from cloudq import records
from cloudq.records import CUT_MARKER, MAX_ITEM_BYTES, cut, cut_traceback, item_size
from cloudq.results import ResultBackend, task_key
from cloudq.stores.memory import MemoryStore


def test_cut_keeps_a_short_text_and_marks_a_long_one_with_its_length() -> None:
    assert cut("short", 10) == "short"

    cut_text = cut("a" * 50 + "z" * 50, 20, tail=5)

    assert cut_text == "a" * 15 + "…[cut, 100 characters]…" + "z" * 5


def test_a_huge_traceback_keeps_its_first_frames_and_its_raising_frame() -> None:
    frames = [f'  File "app.py", line {n}, in step_{n}\n    step_{n + 1}()' for n in range(3000)]
    trace = "\n".join(["Traceback (most recent call last):", *frames,
                       '  File "app.py", line 9999, in deepest\n    raise ValueError(bad)',
                       "ValueError: " + "v" * 100_000])

    fitted = cut_traceback(trace)

    assert len(fitted) < records.TRACEBACK_HEAD_CHARS + records.TRACEBACK_TAIL_CHARS + 100
    assert fitted.startswith("Traceback (most recent call last):\n  File \"app.py\", line 0")
    assert "lines]…" in fitted and CUT_MARKER in fitted
    last_lines = fitted.splitlines()[-3:]
    assert last_lines[:2] == ['  File "app.py", line 9999, in deepest', "    raise ValueError(bad)"]
    assert last_lines[2].startswith("ValueError: vvv") and CUT_MARKER in last_lines[2]


@pytest.mark.parametrize("value", ["é" * 1000, {"a": [1, 2.5, None, True]}, 12345678901234567890])
def test_item_size_is_at_least_the_utf8_json_size_of_a_text(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)

    assert item_size({"result": text}) == len(b"result") + len(text.encode())


def test_a_record_that_would_still_not_fit_is_an_encode_error_naming_its_largest_fields() -> None:
    backend = ResultBackend(MemoryStore(), expires_s=60)

    with pytest.raises(cloudq.EncodeError, match=r"over DynamoDB's 409,600-byte item limit.*big"):
        backend.item_for("t-1", "SUCCESS", "x", big=["y" * 1000] * 300,
                         **{f"note{i}": "z" * 3900 for i in range(30)})


# -- result_compression -------------------------------------------------------------------------
@pytest.fixture
def app() -> cloudq.App:
    from cloudq.transports.memory import MemoryTransport

    return cloudq.App("t", transport=MemoryTransport(), store=MemoryStore(),
                      set_as_current=False, result_compression="gzip")


def test_result_compression_stores_a_300_kb_result_gzipped_and_reads_it_back(
    app: cloudq.App,
) -> None:
    value = {"rows": [{"sku": f"SKU-{i % 50}", "qty": i % 7} for i in range(12_000)]}
    assert len(json.dumps(value)) > 300_000

    app.backend.save("t-2", "SUCCESS", value)

    item = app.store.get(task_key("t-2"))
    assert item is not None and item["result_encoding"] == "gzip"
    assert item_size(item) < MAX_ITEM_BYTES // 10
    result = cloudq.AsyncResult("t-2", app=app)
    assert result.get(timeout=1) == value
    assert asyncio.run(result.aget(timeout=1)) == value


def test_result_compression_leaves_a_small_result_plain(app: cloudq.App) -> None:
    app.backend.save("t-3", "SUCCESS", [1, 2, 3])

    item = app.store.get(task_key("t-3"))
    assert item is not None and item["result"] == "[1,2,3]" and "result_encoding" not in item


def test_without_result_compression_a_result_is_plain_json(app: cloudq.App) -> None:
    app.conf.update(result_compression=None)

    app.backend.save("t-4", "SUCCESS", "r" * 5000)

    item = app.store.get(task_key("t-4"))
    assert item is not None and "result_encoding" not in item
