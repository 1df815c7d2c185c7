"""A pydantic model behind an import-time side effect (see the package docstring)."""

from __future__ import annotations

import os

from pydantic import BaseModel

os.environ["HOSTILE_MODELS_IMPORTED"] = "1"


class Payload(BaseModel):
    x: int = 0
