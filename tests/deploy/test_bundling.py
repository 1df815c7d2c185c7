"""The Lambda code asset, staged without Docker: complete, deterministic, cached, refused clearly.

The session's one real pip install stages the repository's example app for this machine's
Python and architecture; every check that runs it does so with nothing but the staged tree
(and the standard library) on ``sys.path``. The cache and error logic is also checked with a
stand-in for pip, which needs no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.cdk import bundling
from cloudq.cdk.bundling import stage_code, write_fargate_context
from cloudq.errors import ConfigError

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
HOST_ARCH: Any = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
on_lambda_like_host = pytest.mark.skipif(
    sys.platform != "linux" or HOST_ARCH is None or platform.libc_ver()[0] != "glibc",
    reason="the staged manylinux wheels only import on glibc Linux (x86_64 or aarch64)")

PROBE = """
import json, sys
import boto3, botocore, pydantic, pydantic_core, pydantic_settings, aws_lambda_powertools
import cloudq, cloudq.lambda_handler as entry
import shop.tasks
print(json.dumps({
    "files": {m.__name__: m.__file__ for m in (boto3, botocore, pydantic, pydantic_core,
              pydantic_settings, aws_lambda_powertools, cloudq, entry, shop.tasks)},
    "handler": type(entry._handler).__name__,
    "tasks": sorted(entry._handler.app.tasks),
    "path": sys.path,
    "modules": sorted(sys.modules),
}))
"""


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_isolated(tree: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Python with only the standard library and ``tree`` on sys.path: no site, no venv (and
    no bytecode written into the tree, which would change its hash)."""
    clean = {"PATH": os.defpath, "PYTHONPATH": str(tree), "HOME": str(cwd),
             "AWS_EC2_METADATA_DISABLED": "true", **env}
    return subprocess.run([sys.executable, "-S", "-P", "-B", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd, env=clean)


@pytest.fixture(scope="session")
def staged_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example app staged once per session (pip runs only when the cache is cold)."""
    if HOST_ARCH is None:
        pytest.skip(f"no Lambda architecture for {platform.machine()}")
    started = time.monotonic()
    staged = stage_code(EXAMPLES, architecture=HOST_ARCH, python_version=HOST_PYTHON,
                        out_dir=tmp_path_factory.mktemp("build"))
    print(f"staged {staged} in {time.monotonic() - started:.1f} s")
    yield staged


@on_lambda_like_host
def test_the_staged_tree_alone_builds_the_lambda_handler(staged_example: Path,
                                                         tmp_path: Path) -> None:
    done = run_isolated(staged_example, "-c", PROBE, cwd=tmp_path, CLOUDQ_APP="shop.tasks:app",
                        AWS_DEFAULT_REGION="us-east-1", AWS_LAMBDA_FUNCTION_NAME="cloudq-test")

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {name: Path(file).is_relative_to(staged_example)
            for name, file in out["files"].items()} == dict.fromkeys(out["files"], True)
    assert not [entry for entry in out["path"] if "site-packages" in entry]
    assert out["handler"] == "LambdaHandler"  # built in the init phase, for shop.tasks:app
    assert "shop.tasks.add" in out["tasks"]
    assert not [m for m in out["modules"] if m.split(".")[0] in ("click", "croniter")]


@on_lambda_like_host
def test_the_staged_tree_alone_runs_the_cli(staged_example: Path, tmp_path: Path) -> None:
    poll = run_isolated(staged_example, "-m", "cloudq.cli", "poll", "--help", cwd=tmp_path)
    version = run_isolated(staged_example, "-m", "cloudq.cli", "--version", cwd=tmp_path)

    assert poll.returncode == 0, poll.stderr
    assert "Usage: cloudq poll" in poll.stdout
    assert version.stdout.strip() == f"cloudq, version {cloudq.__version__}"


@on_lambda_like_host
def test_the_fargate_context_is_the_tree_and_a_dockerfile(staged_example: Path,
                                                          tmp_path: Path) -> None:
    context = write_fargate_context(staged_example)
    dockerfile = (context / "Dockerfile").read_text()
    (context / "Dockerfile").unlink()
    try:
        assert tree_hash(context) == tree_hash(staged_example)
        poll = run_isolated(context, "-m", "cloudq.cli", "poll", "--help", cwd=tmp_path)
    finally:
        (context / "Dockerfile").write_text(dockerfile)

    assert poll.returncode == 0, poll.stderr
    assert f"public.ecr.aws/docker/library/python:{HOST_PYTHON}-slim" in dockerfile
    assert "COPY . /var/task/" in dockerfile and "PYTHONPATH=/var/task" in dockerfile
    assert 'ENTRYPOINT ["python", "-m", "cloudq.cli"]' in dockerfile


def test_staging_again_is_identical_and_calls_no_pip(staged_example: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(command: list[str], *args: Any, **kwargs: Any) -> Any:
        calls.append(command)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting_run)
    again = stage_code(EXAMPLES, architecture=HOST_ARCH, python_version=HOST_PYTHON,
                       out_dir=tmp_path)

    assert calls == []
    assert again != staged_example and again.name == staged_example.name
    assert tree_hash(again) == tree_hash(staged_example)
    assert not list(again.rglob("__pycache__")) and not (again / "bin").exists()


def test_a_requirement_pip_cannot_find_is_named(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_BUNDLE_CACHE", str(tmp_path / "cache"))
    missing = "cloudq-test-no-such-distribution"

    with pytest.raises(ConfigError, match=missing) as caught:
        stage_code(None, requirements=[missing], out_dir=tmp_path / "build")

    assert "manylinux2014_x86_64" in caught.value.message
    assert not (tmp_path / "build").exists()


def test_an_unreachable_index_is_called_offline(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_BUNDLE_CACHE", str(tmp_path / "cache"))
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured mirrors or wheel dirs
    monkeypatch.setenv("PIP_INDEX_URL", "https://127.0.0.1:9/simple")  # nothing listens
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "1")  # pip names the connection error on a retry

    with pytest.raises(ConfigError, match=r"could not reach the package index \(offline\?\)"):
        stage_code(None, architecture="arm64", out_dir=tmp_path / "build")


class FakePip:
    """Stands in for pip: records each command, installs one small package into --target."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str], *_: Any) -> None:
        self.commands.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "fakedep" / "__pycache__").mkdir(parents=True)
        (target / "fakedep" / "__init__.py").write_text("VALUE = 1\n")
        (target / "fakedep" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
        (target / "bin").mkdir()
        (target / "bin" / "fakedep").write_text("#!/some/host/python\n")


@pytest.fixture
def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePip:
    pip = FakePip()
    monkeypatch.setattr(bundling, "_run_pip", pip)
    monkeypatch.setenv("CLOUDQ_BUNDLE_CACHE", str(tmp_path / "cache"))
    return pip


@pytest.fixture
def user_code(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    (code / "mytasks" / "__pycache__").mkdir(parents=True)
    (code / "mytasks" / "__init__.py").write_text("import cloudq\napp = cloudq.App('mine')\n")
    (code / "mytasks" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    for junk in (".git", ".venv", "node_modules", "cdk.out", ".mypy_cache"):
        (code / junk).mkdir()
        (code / junk / "file").write_text("junk")
    return code


def test_the_dependency_cache_is_keyed_by_packages(fake_pip: FakePip, user_code: Path,
                                                    tmp_path: Path) -> None:
    first = stage_code(user_code, out_dir=tmp_path / "a")
    second = stage_code(user_code, out_dir=tmp_path / "b")
    stage_code(user_code, out_dir=tmp_path / "a", architecture="arm64")
    stage_code(user_code, out_dir=tmp_path / "a", requirements=["requests"])

    assert len(fake_pip.commands) == 3  # the second staging reused the first's install
    assert tree_hash(first) == tree_hash(second)
    assert "manylinux2014_aarch64" in fake_pip.commands[1]
    assert "requests" in fake_pip.commands[2]
    names = sorted(p.name for p in first.iterdir())
    assert names == [".cloudq-bundle.json", "cloudq", f"cloudq-{cloudq.__version__}.dist-info",
                     "fakedep", "mytasks"]
    assert sorted(p.name for p in (first / "mytasks").iterdir()) == ["__init__.py"]
    assert not (first / "cloudq" / "__pycache__").exists()
    assert (first / "cloudq" / "lambda_handler.py").read_bytes() == (
        Path(cloudq.__file__).parent / "lambda_handler.py").read_bytes()


def test_a_change_in_the_code_is_a_new_tree(fake_pip: FakePip, user_code: Path,
                                            tmp_path: Path) -> None:
    before = stage_code(user_code, out_dir=tmp_path / "out")
    (user_code / "mytasks" / "more.py").write_text("X = 2\n")
    after = stage_code(user_code, out_dir=tmp_path / "out")

    assert after != before and (after / "mytasks" / "more.py").is_file()
    assert len(fake_pip.commands) == 1


def test_the_users_requirements_override_cloudqs_pins(fake_pip: FakePip, user_code: Path,
                                                      tmp_path: Path) -> None:
    (user_code / "requirements.txt").write_text("# ours\nboto3>=1.40  # newer SDK\nrequests\n")

    stage_code(user_code, out_dir=tmp_path / "out")

    command = fake_pip.commands[0]
    assert command[command.index("-r") + 1] == str(user_code / "requirements.txt")
    assert not [arg for arg in command if arg.startswith(("boto3==", "botocore=="))]
    assert [arg for arg in command if arg.startswith("pydantic==")]


def test_a_tree_over_lambdas_limit_is_refused_naming_the_biggest(
        fake_pip: FakePip, user_code: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (user_code / "models").mkdir()
    (user_code / "models" / "weights.bin").write_bytes(b"\0" * 3_000_000)
    monkeypatch.setattr(bundling, "LAMBDA_UNZIPPED_LIMIT_BYTES", 2_000_000)

    with pytest.raises(ConfigError, match=r"250 MB limit; the biggest entries: models 3\.0 MB"):
        stage_code(user_code, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_code_that_would_shadow_a_bundled_package_is_refused(fake_pip: FakePip, user_code: Path,
                                                             tmp_path: Path) -> None:
    (user_code / "cloudq").mkdir()
    (user_code / "cloudq" / "__init__.py").write_text("")

    with pytest.raises(ConfigError, match="cloudq would replace"):
        stage_code(user_code, out_dir=tmp_path / "out")


def test_a_leftover_without_its_marker_is_rebuilt(fake_pip: FakePip, user_code: Path,
                                                  tmp_path: Path) -> None:
    staged = stage_code(user_code, out_dir=tmp_path / "out")
    (staged / bundling.MANIFEST).unlink()  # as if a build had stopped half-way
    (staged / "stray.txt").write_text("half a build")
    deps = next((tmp_path / "cache").iterdir())
    (deps / bundling.MANIFEST).unlink()

    again = stage_code(user_code, out_dir=tmp_path / "out")

    assert again == staged and (again / bundling.MANIFEST).is_file()
    assert not (again / "stray.txt").exists()
    assert len(fake_pip.commands) == 2  # the dependency cache entry was incomplete too
