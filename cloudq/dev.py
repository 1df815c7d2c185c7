"""``cloudq dev``: an embedded local AWS, the app provisioned in it, and a poller, in one process.

Nothing here talks to a real AWS account: the app is pointed at the moto server on
127.0.0.1 before its first AWS call, and boto3 gets dummy credentials when it has none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.provision import ProvisionReport

READY_LINE = "cloudq dev: local AWS at {endpoint_url}"
"""Printed once everything is provisioned; scripts wait for it (see examples/run_demo.py)."""
HOST = "127.0.0.1"


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
