"""The synthesized stacks pass cfn-lint with no error and checkov with no failed check.

Every checkov suppression sits on its resource (``Metadata.checkov.skip``, written by
``cloudq.cdk.suppressions``) with a reason, and each is still needed: the same template with
the suppressions removed fails exactly those checks. checkov runs once for all templates, from
its own virtualenv (``.venv/checkov``, ``make checkov-venv``: its pins clash with our boto3).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKOV_VENV = ROOT / ".venv" / "checkov"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
STACKS = ("example", "fargate", "orders")
BARE = "-unsuppressed"
"""Suffix of the copies scanned with every checkov suppression removed."""


def _cfn_lint(template: dict[str, Any]) -> list[Any]:
    from cfnlint.api import ManualArgs, lint

    return lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))


def _errors(matches: list[Any]) -> list[Any]:
    return [m for m in matches if m.rule.id.startswith("E")]


def _listing(matches: list[Any]) -> str:
    return "\n".join(f"{m.rule.id} {'/'.join(map(str, m.path))}: {m.message}" for m in matches)


@pytest.mark.parametrize("stack", STACKS)
def test_cfn_lint_finds_no_error(assembly: dict[str, Any], stack: str) -> None:
    matches = _cfn_lint(assembly[stack].template)
    assert not _errors(matches), f"cfn-lint on {stack}:\n{_listing(matches)}"


def test_cfn_lint_reports_an_out_of_range_visibility_timeout(assembly: dict[str, Any]) -> None:
    template = copy.deepcopy(assembly["example"].template)
    queue = next(lid for lid, res in template["Resources"].items()
                 if res["Type"] == "AWS::SQS::Queue")
    template["Resources"][queue]["Properties"]["VisibilityTimeout"] = 99999
    errors = _errors(_cfn_lint(template))
    assert [(m.rule.id, m.path[:2]) for m in errors] == [("E3034", ["Resources", queue])], \
        _listing(errors)


def _suppressed(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(checkov resource name, check id) -> reason, from the template's resource Metadata."""
    return {(f"{res['Type']}.{lid}", skip["id"]): skip.get("comment", "")
            for lid, res in template["Resources"].items()
            for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", [])}


def _unsuppressed(template: dict[str, Any]) -> dict[str, Any]:
    bare = copy.deepcopy(template)
    for res in bare["Resources"].values():
        res.get("Metadata", {}).pop("checkov", None)
    return bare


def _checkov_executable() -> Path:
    if CHECKOV.exists():
        return CHECKOV
    message = f"no checkov in {CHECKOV_VENV.relative_to(ROOT)}: `make checkov-venv` installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def checkov_results(assembly: dict[str, Any],
                    tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov run over every stack's template and its unsuppressed copy."""
    executable = _checkov_executable()
    folder = tmp_path_factory.mktemp("checkov")
    for stack in STACKS:
        template = assembly[stack].template
        (folder / f"{stack}.json").write_text(json.dumps(template))
        (folder / f"{stack}{BARE}.json").write_text(json.dumps(_unsuppressed(template)))
    done = subprocess.run(
        [str(executable), "-d", str(folder), "--framework", "cloudformation", "-o", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"})
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(done.stdout)
    if isinstance(report, list):  # one report per framework when several ran
        report = next(r for r in report if r["check_type"] == "cloudformation")
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return dict(report["results"])


def _of(results: dict[str, Any], kind: str, file: str) -> dict[tuple[str, str], str]:
    return {(c["resource"], c["check_id"]): c["check_name"]
            for c in results.get(kind, []) if Path(c["file_path"]).stem == file}


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_finds_no_failed_check(checkov_results: dict[str, Any], stack: str) -> None:
    failed = _of(checkov_results, "failed_checks", stack)
    listing = [f"{cid} {res}: {name}" for (res, cid), name in sorted(failed.items())]
    assert not failed, "\n".join(listing)


@pytest.mark.parametrize("stack", STACKS)
def test_each_checkov_suppression_has_a_reason_and_is_needed(
        assembly: dict[str, Any], checkov_results: dict[str, Any], stack: str) -> None:
    written = _suppressed(assembly[stack].template)
    assert written, f"{stack}: no suppression found in the template's Metadata"
    assert all(len(reason) > 20 for reason in written.values()), written
    assert set(_of(checkov_results, "skipped_checks", stack)) == set(written)
    assert set(_of(checkov_results, "failed_checks", f"{stack}{BARE}")) == set(written)


def test_suppress_writes_checkov_metadata_on_the_default_child() -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import aws_cdk as cdk
    from aws_cdk import assertions
    from aws_cdk import aws_sqs as sqs

    from cloudq.cdk import suppressions

    stack = cdk.Stack(cdk.App(), "Probe")
    queue = sqs.Queue(stack, "Queue")
    suppressions.suppress(queue, suppressions.SQS_MANAGED_SSE)
    suppressions.suppress(queue, ("CKV_AWS_0", "a second call adds to the first"))
    resource = assertions.Template.from_stack(stack).to_json()["Resources"]
    (queue_resource,) = resource.values()
    assert queue_resource["Metadata"]["checkov"] == {"skip": [
        {"id": "CKV_AWS_27", "comment": suppressions.SQS_MANAGED_SSE[1]},
        {"id": "CKV_AWS_0", "comment": "a second call adds to the first"}]}
    with pytest.raises(TypeError, match="no CloudFormation resource"):
        suppressions.suppress(stack, suppressions.SQS_MANAGED_SSE)
