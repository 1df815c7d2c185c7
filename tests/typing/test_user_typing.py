"""``Task[P, R]`` carries the function's types to the user's type checker."""

from __future__ import annotations

from pathlib import Path

from mypy import api

USER_CODE = Path(__file__).with_name("user_code.py")


def test_mypy_sees_task_parameters_and_results() -> None:
    out, _, status = api.run(["--strict", "--no-incremental", "--cache-dir=/dev/null",
                              str(USER_CODE)])

    errors = [line for line in out.splitlines() if ": error:" in line]
    marked = [n for n, line in enumerate(USER_CODE.read_text().splitlines(), 1)
              if "# error:" in line]
    assert [int(e.split(":")[1]) for e in errors] == marked, out
    assert all('incompatible type "str"; expected "int"' in e for e in errors), out
    assert status == 1
