"""An embedded local AWS: moto's server on 127.0.0.1, started by cloudq itself.

Used by ``cloudq dev``, by ``cloudq.testing`` and by the benchmarks. Needs the ``local``
extra (``pip install 'cloudq[local]'``); moto is imported only when a server is started.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from types import TracebackType
from typing import Any

from cloudq.errors import ConfigError

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def use_dummy_credentials() -> None:
    """Give boto3 credentials for a local endpoint if the environment has none."""
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)


class LocalAws:
    """A moto server in a background thread; ``endpoint_url`` is where clients should go."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalAws:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "the embedded local AWS needs moto's server: pip install 'cloudq[local]'"
            ) from exc
        if not port_is_free(self.host, self.port):
            raise ConfigError(
                f"cannot start the local AWS: port {self.port} on {self.host} is in use; "
                "choose another with --port or leave it out to take a free one"
            )
        use_dummy_credentials()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on stderr
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        return self

    def reset(self) -> None:
        """Forget every queue, table and bucket (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
