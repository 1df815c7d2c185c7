"""cloudq's embedded moto server in a child process, for tests that need moto to themselves."""

from __future__ import annotations

import select
import subprocess
import sys
from typing import Any

SERVER_START_S = 30.0

_SERVE = """\
import os, sys
from cloudq.localaws import LocalAws
aws = LocalAws(port=int(sys.argv[1])).start()
print("ready", flush=True)
os.dup2(2, 1)  # what moto prints from now on goes to stderr: nobody reads the pipe
sys.stdin.read()  # until the parent closes the pipe (or dies)
aws.stop()
"""


class MotoProcess:
    """cloudq's embedded moto server (``LocalAws``) in a child process of its own.

    moto keeps its state in module globals, so every moto server started inside one process
    (the integration tier's ``local_aws`` among them) shares one set of queues and tables;
    a child process keeps a stack's resources apart from every other test's.
    """

    def __init__(self) -> None:
        from cloudq.localaws import free_port

        self.port = free_port()
        self._process: subprocess.Popen[str] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoProcess:
        """Start the server; like ``LocalAws.start``, give this process dummy credentials."""
        from cloudq.localaws import use_dummy_credentials

        use_dummy_credentials()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(self.port)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        ready = _read_line(self._process.stdout, SERVER_START_S)
        if ready.strip() != "ready":
            self.stop()
            raise RuntimeError(f"moto server did not start (said {ready!r})")
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> MotoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_line(stream: Any, timeout_s: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout_s)
    return str(stream.readline()) if ready else ""
