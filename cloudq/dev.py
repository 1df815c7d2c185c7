"""``cloudq dev``: an embedded local AWS, the app provisioned in it, a poller and the beat, in one
process.

Nothing here talks to a real AWS account: the app is pointed at the moto server on
127.0.0.1 before its first AWS call, and boto3 gets dummy credentials when it has none.
"""

from __future__ import annotations

import threading
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
    """Start the local AWS, provision ``app`` in it, poll (and run the beat, if the app has a
    ``beat_schedule``) until SIGINT/SIGTERM; exit code."""
    from cloudq.localaws import LocalAws
    from cloudq.provision import provision
    from cloudq.runners.poller import Poller
    from cloudq.scheduler.beat import Beat

    beat = Beat(app) if app.settings.beat_schedule else None  # a bad schedule fails first
    local = LocalAws(host=HOST, port=port).start()
    beat_thread = None
    try:
        app.conf.update(endpoint_url=local.endpoint_url)
        echo(summary(provision(app, queues)))
        if beat is not None:
            beat_thread = threading.Thread(target=beat.run, name="cloudq-beat", daemon=True)
            beat_thread.start()
            echo(f"cloudq dev: beat sending {len(beat.entries)} periodic task(s)")
        echo(READY_LINE.format(endpoint_url=local.endpoint_url))
        echo(f"  send from another shell with: export CLOUDQ_ENDPOINT_URL={local.endpoint_url}")
        return Poller(app, queues, concurrency=concurrency).run()
    finally:
        if beat is not None and beat_thread is not None:
            beat.stop()
            beat_thread.join(timeout=5)
        app.close()
        local.stop()
