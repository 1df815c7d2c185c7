"""What cannot be deployed is refused at synth time, by name, before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cloudq
from cloudq import crontab
from cloudq.errors import ConfigError, ScheduleError
from tests.deploy.conftest import APPS, Synthesized

pytestmark = pytest.mark.deploy


def build(tmp_path: Path, **props: Any) -> None:
    import aws_cdk as cdk

    from cloudq.cdk.stack import CloudqStack

    cdk_app = cdk.App(outdir=str(tmp_path / "out"))
    CloudqStack(cdk_app, "Refused", code=APPS, **props)
    cdk_app.synth()


def test_an_app_path_that_does_not_import(tmp_path: Path):
    with pytest.raises(ConfigError, match="no_such_module") as err:
        build(tmp_path, app="no_such_module.tasks:app")
    assert "app" in str(err.value)
    assert not list((tmp_path / "out").glob("*.json"))  # nothing synthesized


def test_a_task_longer_than_lambda_allows(tmp_path: Path):
    app = cloudq.App("long", set_as_current=False)

    @app.task(name="long.crunch", time_limit=20 * 60)
    def crunch() -> None: ...

    with pytest.raises(ConfigError, match=r"'long.crunch'.*time_limit=1200.*workers=\"fargate\""):
        build(tmp_path, app=app, app_path="long:app")
    assert not list((tmp_path / "out").glob("*.json"))  # nothing synthesized


def test_the_same_task_deploys_on_fargate(tmp_path: Path):
    from cloudq.cdk.plan import plan

    app = cloudq.App("long", set_as_current=False)

    @app.task(name="long.crunch", time_limit=20 * 60)
    def crunch() -> None: ...

    deployment = plan(app, app_path="long:app", workers="fargate")
    assert deployment.queues[0].visibility_timeout_s >= 20 * 60


def test_a_schedule_eventbridge_cannot_express(tmp_path: Path):
    app = cloudq.App("sched", set_as_current=False)
    app.conf.beat_schedule = {
        "both-days": {"task": "sched.t", "schedule": crontab(day_of_month=13,
                                                             day_of_week="fri")}}
    with pytest.raises(ScheduleError, match=r"'both-days'.*both day_of_month and day_of_week"):
        build(tmp_path, app=app, app_path="sched:app")
    assert not list((tmp_path / "out").glob("*.json"))  # nothing synthesized


def test_a_queue_name_sqs_refuses(tmp_path: Path):
    app = cloudq.App("names", set_as_current=False, task_default_queue="q" * 78)
    with pytest.raises(ConfigError, match=r"queue 'cloudq-q+(-high)?': SQS queue names"):
        build(tmp_path, app=app, app_path="names:app")
    assert not list((tmp_path / "out").glob("*.json"))  # nothing synthesized


def test_an_app_object_needs_its_import_path(tmp_path: Path):
    app = cloudq.App("nopath", set_as_current=False)
    with pytest.raises(ConfigError, match="app_path='module:attr'"):
        build(tmp_path, app=app)


def test_cloudq_deploy_print_gives_the_template(example_assembly: Synthesized, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    from cloudq.cli import cli

    monkeypatch.chdir(tmp_path)
    examples = Path(__file__).resolve().parents[2] / "examples"
    result = CliRunner().invoke(cli, ["deploy", "-A", "shop.tasks:app", "--code", str(examples),
                                      "--print"])
    assert result.exit_code == 0, result.output
    template = json.loads(result.stdout)
    assert template["Resources"].keys() == example_assembly.template["Resources"].keys()


def test_cloudq_deploy_names_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cloudq.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["deploy", "-A", "nowhere.tasks:app", "--print"])
    assert result.exit_code == 1
    assert "nowhere" in result.output
    assert not list((tmp_path / "cdk.out").glob("*.json"))


def test_cloudq_deploy_refuses_an_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cloudq.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["deploy", "-A", "shop.tasks:app", "--print",
                                      "--endpoint-url", "http://127.0.0.1:4566"])
    assert result.exit_code == 2
    assert "cdklocal" in result.output
