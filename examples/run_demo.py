"""The cloudq demo in one command: ``python examples/run_demo.py``. No AWS account needed.

1. starts ``cloudq dev -A examples.shop.tasks:app`` (a local AWS and a worker) in the background;
2. waits for its ``cloudq dev: local AWS at http://127.0.0.1:PORT`` line;
3. runs the shop's client (``examples/shop/client.py``) against that address;
4. stops the worker with SIGTERM, as a process manager would.

The worker's log lines are shown prefixed with ``worker |``. Exits non-zero if anything
went wrong. Takes about 10 seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"cloudq dev: local AWS at (http://\S+)")
START_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def start_dev() -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "cloudq.cli", "dev", "-A", "examples.shop.tasks:app",
               "-c", "4"]
    print(f"$ cloudq {' '.join(command[3:])} &", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "CLOUDQ_ENDPOINT_URL"}
    return subprocess.Popen(
        command, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1,
    )


def forward(stream: IO[str], found: list[str], ready: threading.Event) -> None:
    """Echo the worker's output with a prefix; note the endpoint when it is announced."""
    for line in stream:
        print(f"worker | {line.rstrip()}", flush=True)
        match = READY.search(line)
        if match and not found:
            found.append(match.group(1))
            ready.set()
    ready.set()  # the worker exited: stop waiting


def follow(dev: subprocess.Popen[str]) -> tuple[str | None, threading.Thread]:
    """Start echoing the worker's output; wait for its endpoint (None if it never came)."""
    assert dev.stdout is not None
    found: list[str] = []
    ready = threading.Event()
    echo = threading.Thread(target=forward, args=(dev.stdout, found, ready), daemon=True)
    echo.start()
    ready.wait(START_TIMEOUT_S)
    return (found[0] if found else None), echo


def run_client(endpoint: str) -> int:
    print(f"\n$ CLOUDQ_ENDPOINT_URL={endpoint} python -m examples.shop.client\n", flush=True)
    env = {**os.environ, "CLOUDQ_ENDPOINT_URL": endpoint, "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.run([sys.executable, "-m", "examples.shop.client"], cwd=ROOT,
                              env=env, timeout=CLIENT_TIMEOUT_S, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"the client did not finish within {CLIENT_TIMEOUT_S:.0f} s", file=sys.stderr)
        return 1


def stop(dev: subprocess.Popen[str]) -> int:
    if dev.poll() is None:
        print("\nstopping the worker (SIGTERM)...", flush=True)
        dev.terminate()
    try:
        return dev.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"the worker did not stop within {STOP_TIMEOUT_S:.0f} s; killing it",
              file=sys.stderr)
        dev.kill()
        dev.wait()
        return 1


def main() -> int:
    started = time.monotonic()
    dev = start_dev()
    try:
        endpoint, echo = follow(dev)
        if endpoint is None:
            print("cloudq dev did not start (see its output above)", file=sys.stderr)
            client_code = 1
        else:
            client_code = run_client(endpoint)
    finally:
        dev_code = stop(dev)
    echo.join(5)  # the worker's last lines
    took = time.monotonic() - started
    if client_code or dev_code:
        print(f"\ndemo FAILED (client exit {client_code}, worker exit {dev_code}, {took:.1f} s)")
        return 1
    print(f"\ndemo finished in {took:.1f} s: the worker stopped cleanly.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
