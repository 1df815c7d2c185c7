"""The ``cloudq`` command line against a moto server: provision, call, poll, result, purge, dev.

Each test writes its own small app module (queues and table named with ``unique_prefix``) into
a temporary directory and runs the commands from there, as a user would from a project root.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cloudq.aws import AwsClients
from cloudq.cli import cli
from cloudq.localaws import LocalAws

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("poll", "provision", "dev", "call", "result", "purge", "beat", "schedule export",
            "schedule sync", "deploy")

APP_SOURCE = """\
import cloudq

app = cloudq.App("clitest", queue_prefix={prefix!r}, result_table={table!r},
                 worker_poll_wait=1)
not_an_app = 42


@app.task(name="clitest.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="clitest.boom")
def boom() -> None:
    raise ValueError("boom")
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No app or endpoint from the caller's shell; logging levels restored afterwards."""
    for name in ("CLOUDQ_APP", "CLOUDQ_ENDPOINT_URL", "CLOUDQ_QUEUE_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    loggers = [logging.getLogger(name) for name in ("", "botocore", "boto3", "urllib3")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture
def app_spec(tmp_path: Path, unique_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``module:app`` of a fresh app module in the current directory."""
    module = "cliapp_" + unique_prefix.replace("-", "_")
    source = APP_SOURCE.format(prefix=unique_prefix, table=f"{unique_prefix}results")
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    yield f"{module}:app"
    sys.modules.pop(module, None)


@pytest.fixture
def run(local_aws: LocalAws, app_spec: str) -> CliRunnerCall:
    return CliRunnerCall(app_spec, local_aws.endpoint_url)


class CliRunnerCall:
    """``run("call", "clitest.add", ...)``: a command with -A and --endpoint-url filled in."""

    def __init__(self, app_spec: str, endpoint_url: str) -> None:
        self.app_spec = app_spec
        self.endpoint_url = endpoint_url

    def __call__(self, command: str, *args: str, input: str | None = None) -> Result:
        argv = [command, "-A", self.app_spec, "--endpoint-url", self.endpoint_url, *args]
        return CliRunner().invoke(cli, argv, input=input, catch_exceptions=False)


def field(result: Result, name: str) -> str:
    """The value of a ``name: value`` line of ``cloudq result``."""
    for line in result.stdout.splitlines():
        if line.startswith(f"{name}: "):
            return line.removeprefix(f"{name}: ")
    raise AssertionError(f"no {name!r} line in:\n{result.output}")


# -- provision -----------------------------------------------------------------------------------
def test_provision_creates_every_band_with_its_dlq_and_the_table(
    run: CliRunnerCall, aws_clients: AwsClients, unique_prefix: str
) -> None:
    result = run("provision")

    assert result.exit_code == 0, result.output
    urls = aws_clients.sqs.list_queues(QueueNamePrefix=unique_prefix).get("QueueUrls", [])
    names = sorted(url.rsplit("/", 1)[-1].removeprefix(unique_prefix) for url in urls)
    assert names == sorted(["default", "default-dlq", "default-high", "default-high-dlq",
                            "default-low", "default-low-dlq"])
    table = f"{unique_prefix}results"
    ttl = aws_clients.dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert f"queue  {unique_prefix}default-high" in result.stdout
    assert f"table  {table}" in result.stdout


def test_provision_again_is_harmless(run: CliRunnerCall) -> None:
    assert run("provision").exit_code == 0
    again = run("provision", "-Q", "default")

    assert again.exit_code == 0, again.output


def test_provision_of_named_queues(
    run: CliRunnerCall, aws_clients: AwsClients, unique_prefix: str
) -> None:
    result = run("provision", "-Q", "emails,reports.fifo")

    assert result.exit_code == 0, result.output
    urls = aws_clients.sqs.list_queues(QueueNamePrefix=unique_prefix).get("QueueUrls", [])
    names = {url.rsplit("/", 1)[-1].removeprefix(unique_prefix) for url in urls}
    assert {"emails-high", "emails", "emails-low-dlq", "reports.fifo", "reports-dlq.fifo"} <= names
    assert "default" not in names


# -- call, poll, result --------------------------------------------------------------------------
def test_call_poll_result_round_trip(run: CliRunnerCall) -> None:
    run("provision")
    sent = run("call", "clitest.add", "--args", "[1, 2]")
    failing = run("call", "clitest.boom")
    assert sent.exit_code == 0, sent.output
    task_id = sent.stdout.strip()

    polled = run("poll", "--burst", "-c", "2")
    result = run("result", task_id)
    failure = run("result", failing.stdout.strip(), "--traceback")

    assert polled.exit_code == 0, polled.output
    assert field(result, "state") == "SUCCESS"
    assert field(result, "result") == "3"
    assert field(failure, "state") == "FAILURE"
    assert field(failure, "result") == '{"exc_type": "ValueError", "exc_message": "boom"}'
    assert 'raise ValueError("boom")' in failure.stdout


def test_call_with_kwargs_countdown_queue_and_priority(
    run: CliRunnerCall, aws_clients: AwsClients, unique_prefix: str
) -> None:
    run("provision")

    sent = run("call", "clitest.add", "--kwargs", '{"x": 4, "y": 5}', "--countdown", "1",
               "--queue", "default", "--priority", "9")

    assert sent.exit_code == 0, sent.output
    url = aws_clients.sqs.get_queue_url(QueueName=f"{unique_prefix}default-high")["QueueUrl"]
    attributes = aws_clients.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    time.sleep(1.5)
    run("poll", "--burst")
    result = run("result", sent.stdout.strip(), "--wait", "5")
    assert field(result, "state") == "SUCCESS"
    assert field(result, "result") == "9"


def test_result_wait_times_out_with_status_1(run: CliRunnerCall) -> None:
    run("provision")

    result = run("result", "no-such-task", "--wait", "0.2")

    assert result.exit_code == 1
    assert field(result, "state") == "PENDING"
    assert "not finished after 0.2s" in result.stderr


def test_result_of_an_unknown_id_is_pending(run: CliRunnerCall) -> None:
    run("provision")

    result = run("result", "0b5f4c1e-0000-0000-0000-000000000000")

    assert result.exit_code == 0, result.output
    assert field(result, "state") == "PENDING"
    assert field(result, "result") == "null"


def test_call_of_an_unknown_task_warns_and_sends(run: CliRunnerCall) -> None:
    run("provision")

    result = run("call", "clitest.ad")

    assert result.exit_code == 0, result.output
    assert "did you mean clitest.add?" in result.stderr


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--args", "[1, 2", "not valid JSON"),
    ("--args", '{"x": 1}', "expected a JSON array"),
    ("--kwargs", "[1]", "expected a JSON object"),
])
def test_call_rejects_bad_json(run: CliRunnerCall, option: str, value: str, message: str) -> None:
    result = run("call", "clitest.add", option, value)

    assert result.exit_code == 2
    assert option in result.stderr
    assert message in result.stderr


def test_poll_without_queues_says_to_provision(run: CliRunnerCall) -> None:
    result = run("poll", "--burst")

    assert result.exit_code != 0
    assert "cloudq provision" in result.output


# -- purge ---------------------------------------------------------------------------------------
def test_purge_empties_the_queues(
    run: CliRunnerCall, aws_clients: AwsClients, unique_prefix: str
) -> None:
    run("provision")
    run("call", "clitest.add", "--args", "[1, 1]")
    run("call", "clitest.add", "--args", "[2, 2]", "--priority", "9")
    url = aws_clients.sqs.get_queue_url(QueueName=f"{unique_prefix}default")["QueueUrl"]

    refused = run("purge", input="n\n")
    assert refused.exit_code == 1
    assert "Aborted" in refused.output
    assert _depth(aws_clients, url) == 1

    purged = run("purge", "--yes")

    assert purged.exit_code == 0, purged.output
    assert f"purged {unique_prefix}default-high" in purged.stdout
    assert _depth(aws_clients, url) == 0


def _depth(clients: AwsClients, url: str) -> int:
    attributes = clients.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


# -- loading the app -----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "message"), [
    ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
    ("{module}:ap", "has no attribute 'ap'"),
    ("{module}:not_an_app", "is int 42, not a cloudq.App"),
    ("{module}:", "expected module:attribute"),
])
def test_bad_app_gives_a_clear_error(app_spec: str, spec: str, message: str) -> None:
    module = app_spec.partition(":")[0]

    result = CliRunner().invoke(cli, ["result", "-A", spec.format(module=module), "x"])

    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_attribute_suggests_the_app(app_spec: str) -> None:
    module = app_spec.partition(":")[0]

    result = CliRunner().invoke(cli, ["result", "-A", f"{module}:ap", "x"])

    assert f"did you mean -A {module}:app?" in result.stderr


def test_module_alone_uses_its_app_attribute(run: CliRunnerCall, app_spec: str) -> None:
    run("provision")
    run.app_spec = app_spec.partition(":")[0]

    result = run("result", "some-id")

    assert result.exit_code == 0, result.output
    assert field(result, "state") == "PENDING"


def test_app_from_env_or_before_the_command(
    run: CliRunnerCall, local_aws: LocalAws, app_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("provision")
    before = CliRunner().invoke(
        cli, ["-A", app_spec, "--endpoint-url", local_aws.endpoint_url, "result", "x"])
    monkeypatch.setenv("CLOUDQ_APP", app_spec)
    from_env = CliRunner().invoke(cli, ["result", "--endpoint-url", local_aws.endpoint_url, "x"])

    assert before.exit_code == 0, before.output
    assert from_env.exit_code == 0, from_env.output


def test_no_app_at_all(app_spec: str) -> None:
    result = CliRunner().invoke(cli, ["provision"])

    assert result.exit_code == 2
    assert "no app given" in result.stderr


def test_a_module_that_fails_to_import_shows_why(tmp_path: Path, app_spec: str) -> None:
    (tmp_path / "broken_app_module.py").write_text("import no_such_dependency_xyz\n")

    result = CliRunner().invoke(cli, ["result", "-A", "broken_app_module:app", "x"])

    assert result.exit_code == 1
    assert "importing broken_app_module failed" in result.stderr
    assert "no_such_dependency_xyz" in result.stderr
    sys.modules.pop("broken_app_module", None)


# -- help and packaging --------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_examples(command: str) -> None:
    result = CliRunner().invoke(cli, [*command.split(), "--help"])

    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert f"  cloudq {command} -A shop.tasks:app" in result.stdout  # \b kept the line breaks
    for option in ("-A, --app", "--endpoint-url", "--region"):
        assert option in result.stdout


def test_only_the_commands_that_exist_are_listed() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed == {command.split()[0] for command in COMMANDS}


def test_dev_refuses_another_endpoint(run: CliRunnerCall) -> None:
    result = run("dev")

    assert result.exit_code == 2
    assert "runs its own local AWS" in result.stderr


def test_import_cloudq_does_not_import_click() -> None:
    code = "import sys, cloudq; sys.exit('click' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_python_dash_m_cloudq_cli_works() -> None:
    result = subprocess.run([sys.executable, "-m", "cloudq.cli", "--help"], capture_output=True,
                            text=True, check=False, cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert "Usage: cloudq" in result.stdout


# -- the demo ------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_demo_runs_to_success() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    result = subprocess.run([sys.executable, "examples/run_demo.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=110, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "All 5 tasks behaved as expected." in result.stdout
    assert "cloudq dev: local AWS at http://127.0.0.1:" in result.stdout
    assert "raised ValueError: coupon 'SPRING24' has expired" in result.stdout


def test_beat_refuses_an_app_without_periodic_tasks(run: CliRunnerCall) -> None:
    result = run("beat")

    assert result.exit_code != 0
    assert "beat_schedule is empty" in result.output


def test_beat_names_a_bad_entry_before_it_starts(
        run: CliRunnerCall, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_BEAT_SCHEDULE",
                       '{"nightly": {"task": "clitest.add", "schedule": 60, "args": [1, "x"]}}')

    result = run("beat")

    assert result.exit_code != 0
    assert "beat_schedule['nightly']" in result.output
