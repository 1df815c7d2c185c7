"""Cold start: ``import cloudq`` loads no AWS SDK, CLI, scheduler or infrastructure framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("boto3", "botocore", "aioboto3", "click", "croniter", "moto", "aws_cdk")

PROBE = """
import json, sys
import cloudq
from cloudq.transports.memory import MemoryTransport
from cloudq.stores.memory import MemoryStore
app = cloudq.App("probe", transport=MemoryTransport(), store=MemoryStore())
add = app.task(name="probe.add")(lambda x, y: x + y)
add.delay(1, 2)
print(json.dumps(sorted(sys.modules)))
"""


def modules_loaded_by(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=REPO)
    return set(json.loads(done.stdout))


def test_import_and_in_memory_use_load_no_heavy_dependency() -> None:
    loaded = modules_loaded_by(PROBE)

    assert "cloudq" in loaded  # the probe did run
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []


def test_the_probe_would_notice_a_heavy_import() -> None:
    loaded = modules_loaded_by("import json, sys, click; print(json.dumps(sorted(sys.modules)))")

    assert "click" in loaded
