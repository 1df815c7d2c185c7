"""``cloudq dev``: an embedded local AWS, the app provisioned in it, and a poller, in one process.

Nothing here talks to a real AWS account: the app is pointed at the moto server on
127.0.0.1 before its first AWS call, and boto3 gets dummy credentials when it has none.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cloudq.errors import ConfigError

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.provision import ProvisionReport

READY_LINE = "cloudq dev: local AWS at {endpoint_url}"
"""Printed once everything is provisioned; scripts wait for it (see examples/run_demo.py)."""
HOST = "127.0.0.1"


def check_port_free(port: int, host: str = HOST) -> None:
    """Raise ConfigError if ``port`` is taken (moto's server would hang trying to bind it)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {host} is in use ({exc.strerror}); choose another with --port "
                "or leave it out to take a free one"
            ) from exc


def summary(report: ProvisionReport) -> str:
    queues = ", ".join(queue.physical_name for queue in report.queues)
    return f"cloudq dev: queues {queues} (each with a -dlq) and table {report.table} ready"


def run_dev(
    app: App,
    queues: Sequence[str] | None = None,
    *,
    port: int | None = None,
    concurrency: int | None = None,
    echo: Callable[[str], object] = print,
) -> int:
    """Start the local AWS, provision ``app`` in it, poll until SIGINT/SIGTERM; exit code."""
    from cloudq.localaws import LocalAws
    from cloudq.provision import provision
    from cloudq.runners.poller import Poller

    if port is not None:
        check_port_free(port)
    local = LocalAws(host=HOST, port=port).start()
    try:
        app.conf.update(endpoint_url=local.endpoint_url)
        echo(summary(provision(app, queues)))
        echo(READY_LINE.format(endpoint_url=local.endpoint_url))
        echo(f"  send from another shell with: export CLOUDQ_ENDPOINT_URL={local.endpoint_url}")
        return Poller(app, queues, concurrency=concurrency).run()
    finally:
        app.close()
        local.stop()
