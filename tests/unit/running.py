"""A poller running in a thread, for the unit tests of the pools."""

from __future__ import annotations

import threading

from cloudq.runners.poller import Poller


class Running:
    """A poller running in a thread (so no signal handlers), and what ``run`` returned."""

    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.poller.run()

    def stop(self, timeout_s: float = 5.0) -> int | None:
        self.poller.stop()
        self.thread.join(timeout_s)
        return self.code
