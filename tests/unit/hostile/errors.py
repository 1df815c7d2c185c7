"""An exception class behind an import-time side effect (see the package docstring)."""

from __future__ import annotations

import os

os.environ["HOSTILE_ERRORS_IMPORTED"] = "1"


class Boom(Exception):
    """Raised by no one."""
