"""Cold start: the Lambda entry point loads no CLI, scheduler, emulator, CDK or async SDK,
neither when imported nor through Lambda's init phase and a first batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("click", "croniter", "moto", "aws_cdk", "aioboto3", "aiobotocore")

PROBE_APP = """
import cloudq
from cloudq.stores.memory import MemoryStore
from cloudq.transports.memory import MemoryTransport

app = cloudq.App("probe", transport=MemoryTransport(), store=MemoryStore())
"""

FIRST_BATCH = """
import json, sys
import cloudq.lambda_handler as entry
event = {"Records": [{
    "messageId": "m-1", "receiptHandle": "r-1", "body": "not a task", "attributes": {},
    "messageAttributes": {}, "eventSource": "aws:sqs",
    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:cloudq-default",
}]}
assert entry._handler is not None, "the init phase did not load the app"
print(json.dumps({"response": entry.handler(event), "modules": sorted(sys.modules)}))
"""


def run_probe(code: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("CLOUDQ_", "AWS_LAMBDA_"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=cwd, env={**clean, **(env or {})})
    return done.stdout


def heavy_in(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_importing_the_lambda_entry_point_loads_nothing_heavy() -> None:
    modules = json.loads(run_probe(
        "import json, sys, cloudq.lambda_handler; print(json.dumps(sorted(sys.modules)))"))

    assert "cloudq.runners.lambda_runner" in modules  # the probe did import the handler
    assert heavy_in(modules) == []


def test_the_init_phase_and_a_first_batch_load_nothing_heavy(tmp_path: Path) -> None:
    (tmp_path / "probe_app.py").write_text(PROBE_APP)
    env = {"AWS_LAMBDA_FUNCTION_NAME": "probe", "CLOUDQ_APP": "probe_app:app",
           "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(REPO)}

    out = json.loads(run_probe(FIRST_BATCH, env, cwd=tmp_path))

    assert out["response"] == {"batchItemFailures": []}  # the poison record was handled
    assert "aws_lambda_powertools.utilities.batch" in out["modules"]
    assert heavy_in(out["modules"]) == []


def test_the_probe_would_notice_a_heavy_import() -> None:
    modules = json.loads(run_probe(
        "import json, sys, click; print(json.dumps(sorted(sys.modules)))"))

    assert "click" in heavy_in(modules)
