"""One CDK synthesis per test session, shared by every deploy test.

Three stacks in one cloud assembly: the repository's example app with Lambda workers (exactly
what ``infra/cdk/app.py`` builds with no context) and with Fargate workers, and a second app
(FIFO queues, a router function, a payload bucket, no schedules) with Lambda workers. The code
assets are staged for real (pip, no Docker).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
APPS = Path(__file__).resolve().parent / "apps"
INFRA = ROOT / "infra" / "cdk"


@dataclass(frozen=True)
class Synthesized:
    """One stack of the session's cloud assembly."""

    outdir: Path
    stack_name: str
    template: dict[str, Any]
    service: Any
    """The stack's CloudqService (its plan, queues, table... as attributes)."""

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.template["Resources"].items() if r["Type"] == kind}


@pytest.fixture(scope="session")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Synthesized]]:
    """The session's one synthesis: ``example`` is what ``infra/cdk/app.py`` builds with no
    context; ``fargate`` the same app on Fargate; ``orders`` the second app as a dev stack."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import aws_cdk as cdk

    from cloudq.cdk import FargateOptions
    from cloudq.cdk.stack import CloudqStack

    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(outdir))
    stacks = {
        "example": infra_app().build(app),
        "fargate": CloudqStack(app, "CloudqFargate", app="shop.tasks:app", code=EXAMPLES,
                               workers="fargate", fargate=FargateOptions(max_tasks=4)),
        "orders": CloudqStack(app, "CloudqOrders", app="orders:app", code=APPS,
                              production=False),
    }
    cloud = app.synth()
    yield {
        key: Synthesized(outdir=outdir, stack_name=stack.stack_name,
                         template=cloud.get_stack_by_name(stack.stack_name).template,
                         service=stack.service)
        for key, stack in stacks.items()
    }


def infra_app() -> Any:
    """``infra/cdk/app.py`` as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cloudq_infra_app", INFRA / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_assembly(assembly: dict[str, Synthesized]) -> Synthesized:
    """The repository's example app (``shop.tasks:app`` from ``examples/``), Lambda workers."""
    return assembly["example"]
