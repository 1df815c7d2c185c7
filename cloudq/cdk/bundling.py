"""The code asset of the Lambda workers (and the Fargate image), built without Docker.

``stage_code`` returns a directory that is the root of a Lambda zip: the third-party
dependencies pip installs for Lambda's platform (``--platform manylinux2014_*
--only-binary=:all:``, never compiled here), cloudq copied from the installed package, and the
user's code. The pip step is cached by (packages, platform, Python version), the staged tree by
a hash of everything in it; both are written to a temporary directory and renamed into place, so
a tree that exists is complete. Two stagings of the same inputs are byte-identical (CDK hashes
the directory for the asset hash).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import cloudq
from cloudq.errors import ConfigError

Architecture = Literal["x86_64", "arm64"]

LAMBDA_UNZIPPED_LIMIT_BYTES = 262_144_000
"""Lambda's limit on a function's unzipped code (and layers): 250 MB."""
FORMAT = 1
"""Bumped when the layout of a staged tree changes, so old caches are not reused."""
MANIFEST = ".cloudq-bundle.json"
"""Written last into a staged tree (and a dependency cache entry): what it was built from."""
SDK = ("boto3", "botocore")
"""Pinned together: the SDK the bundle runs is the one installed (and tested) here."""
JUNK = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "node_modules", "cdk.out", "__pycache__",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".cloudq-build", ".DS_Store",
})
"""Names left out of the user's code (and of cloudq's package)."""
JUNK_SUFFIXES = (".pyc", ".pyo")
OFFLINE = re.compile(r"NewConnectionError|Failed to establish a new connection|Network is "
                     r"unreachable|Temporary failure in name resolution|Name or service not "
                     r"known|No route to host|ConnectTimeoutError|ProxyError")
PIP_TIMEOUT_S = 900


def stage_code(code_dir: Path | None, *, requirements: Sequence[str] = (),
               architecture: Architecture = "x86_64", python_version: str = "3.11",
               out_dir: Path | None = None) -> Path:
    """The root of the Lambda zip (handler ``cloudq.lambda_handler.handler``) for ``code_dir``.

    Dependencies: cloudq's runtime requirements (each pinned to the version installed here),
    ``requirements`` and ``code_dir/requirements.txt``; a requirement naming one of cloudq's
    overrides its pin. The tree is ``out_dir/<hash>`` (default ``./.cloudq-build``), reused
    when it exists. Raises ``ConfigError`` when pip fails or the tree exceeds Lambda's limit.
    """
    _check_target(architecture, python_version)
    req_file = code_dir / "requirements.txt" if code_dir is not None else None
    if req_file is not None and not req_file.is_file():
        req_file = None
    packages = [*_pinned_runtime([*requirements, *_requirement_lines(req_file)]),
                *requirements]
    deps = install_dependencies(packages, architecture=architecture,
                                python_version=python_version, requirements_file=req_file)
    build_root = (out_dir or Path.cwd() / ".cloudq-build").resolve()
    sources = _sources(deps, code_dir, skip=(build_root, deps.parent))
    key = _digest([f"format={FORMAT}", architecture, python_version, *packages], sources)
    staged = build_root / key[:20]
    if (staged / MANIFEST).is_file():
        return staged
    _check_size(sources)
    manifest = {"key": key, "architecture": architecture, "python_version": python_version,
                "packages": packages}
    with _building(staged, MANIFEST) as tmp:
        for rel, source in sources.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                (tmp / rel).write_bytes(source)
            else:
                shutil.copyfile(source, tmp / rel)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return staged


def runtime_requirements() -> list[str]:
    """cloudq's core requirements and its ``lambda`` extra, as declared (unpinned).

    click and croniter are not imported on the Lambda path, but the same tree runs
    ``cloudq poll`` (and any ``cloudq`` command) in the Fargate image."""
    wanted: list[str] = []
    for line in importlib.metadata.requires("cloudq") or []:
        spec, _, marker = line.partition(";")
        if not marker.strip() or marker.replace("'", '"').split() == ["extra", "==", '"lambda"']:
            wanted.append(spec.strip())
    return wanted


def install_dependencies(packages: Sequence[str], *, architecture: Architecture,
                         python_version: str, requirements_file: Path | None = None) -> Path:
    """pip's ``--target`` tree for Lambda's platform, from the cache when it has one."""
    platforms = _platforms(architecture, python_version)
    extra = requirements_file.read_text() if requirements_file else ""
    key = _digest([f"format={FORMAT}", *platforms, python_version, *packages, extra], {})
    entry = _cache_dir() / key[:20]
    if (entry / MANIFEST).is_file():
        return entry
    with _building(entry, MANIFEST) as tmp:
        command = [sys.executable, "-m", "pip", "install", "--target", str(tmp),
                   *(arg for platform in platforms for arg in ("--platform", platform)),
                   "--implementation", "cp", "--python-version", python_version,
                   "--only-binary=:all:", "--no-compile", "--no-input", "--no-warn-conflicts",
                   "--disable-pip-version-check", "--progress-bar", "off", *packages]
        if requirements_file:
            command += ["-r", str(requirements_file)]
        _run_pip(command, packages, platforms, python_version)
        shutil.rmtree(tmp / "bin", ignore_errors=True)  # console scripts with this host's shebang
        for cache in list(tmp.rglob("__pycache__")):
            shutil.rmtree(cache)
        (tmp / MANIFEST).write_text(json.dumps({"packages": list(packages), "extra": extra,
                                                "platforms": platforms}, indent=1) + "\n")
    return entry


def fargate_dockerfile(staged: Path) -> str:
    """A Dockerfile running ``cloudq poll`` from a staged tree, for a build context whose root
    is that tree (the staged directory itself, or the copy ``write_fargate_context`` makes).

    The base image is multi-arch; ``FROM --platform`` picks the architecture the wheels were
    installed for, and nothing runs at build time, so no emulator is needed for arm64."""
    manifest = _manifest(staged)
    platform = "linux/arm64" if manifest["architecture"] == "arm64" else "linux/amd64"
    return (
        "# cloudq workers for Fargate: the staged Lambda tree, run by `cloudq poll`\n"
        f"FROM --platform={platform} "
        f"public.ecr.aws/docker/library/python:{manifest['python_version']}-slim\n"
        "ENV PYTHONPATH=/var/task PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1\n"
        "WORKDIR /var/task\n"
        "COPY . /var/task/\n"
        "USER nobody\n"
        'ENTRYPOINT ["python", "-m", "cloudq.cli"]\n'
        'CMD ["poll"]\n'
    )


def write_fargate_context(staged: Path) -> Path:
    """The image's build context beside the staged tree: ``<staged>-image/``, the tree (hard
    links where the file system allows) plus its ``Dockerfile``, reused when it exists.

    The staged tree itself is left as it is, so the Lambda asset's hash does not change with
    the Fargate image (writing the Dockerfile into the staged tree also works, but does)."""
    context = staged.with_name(staged.name + "-image")
    if (context / "Dockerfile").is_file():
        return context
    dockerfile = fargate_dockerfile(staged)
    with _building(context, "Dockerfile") as tmp:
        shutil.copytree(staged, tmp, copy_function=_link_or_copy, dirs_exist_ok=True)
        (tmp / "Dockerfile").write_text(dockerfile)
    return context


# -- inputs -------------------------------------------------------------------------------------
def _check_target(architecture: str, python_version: str) -> None:
    if architecture not in ("x86_64", "arm64"):
        raise ConfigError(f"architecture {architecture!r}: expected 'x86_64' or 'arm64'")
    if not re.fullmatch(r"3\.\d{1,2}", python_version):
        raise ConfigError(f"python_version {python_version!r}: expected e.g. '3.11'")


def _platforms(architecture: Architecture, python_version: str) -> list[str]:
    """Lambda's Python 3.11 runs on glibc 2.26 (manylinux2014); 3.12 and later on 2.34."""
    machine = "aarch64" if architecture == "arm64" else "x86_64"
    newer = int(python_version.split(".")[1]) >= 12
    return [f"manylinux2014_{machine}", *([f"manylinux_2_28_{machine}"] if newer else [])]


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def _requirement_lines(path: Path | None) -> list[str]:
    if path is None:
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def _pinned_runtime(user: Sequence[str]) -> list[str]:
    """cloudq's requirements pinned to the installed versions, less those the user names."""
    named = {_name(requirement) for requirement in user}
    if named & set(SDK):
        named |= set(SDK)
    wanted = [*runtime_requirements(), *SDK[1:]]
    pinned: list[str] = []
    for requirement in wanted:
        name = _name(requirement)
        if name in named or any(_name(done) == name for done in pinned):
            continue
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(requirement)
    return pinned


def _cache_dir() -> Path:
    if os.environ.get("CLOUDQ_BUNDLE_CACHE"):
        return Path(os.environ["CLOUDQ_BUNDLE_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().resolve() / "cloudq" / "lambda-deps"


# -- the tree -----------------------------------------------------------------------------------
def _files(root: Path, skip: Sequence[Path] = ()) -> Iterator[tuple[str, Path]]:
    """Every file under ``root`` but junk, as (posix relative path, path), sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in JUNK and here / d not in skip)
        for name in sorted(filenames):
            if name not in JUNK and not name.endswith(JUNK_SUFFIXES) and name != MANIFEST:
                yield (here / name).relative_to(root).as_posix(), here / name


Source = Path | bytes
"""A staged file's content: a file to copy, or bytes written here (cloudq's metadata)."""


def _sources(deps: Path, code_dir: Path | None, skip: Sequence[Path]) -> dict[str, Source]:
    """What the staged tree holds: dependencies, cloudq and its metadata, the user's code."""
    taken: dict[str, Source] = dict(_files(deps))
    taken.update((f"cloudq/{rel}", path) for rel, path in _files(Path(cloudq.__file__).parent))
    version = cloudq.__version__
    taken[f"cloudq-{version}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\nName: cloudq\nVersion: {version}\n".encode())
    if code_dir is not None:
        if not code_dir.is_dir():
            raise ConfigError(f"code {code_dir}: not a directory")
        user = dict(_files(code_dir.resolve(), skip))
        clash = sorted({rel.split("/")[0] for rel in user} & {rel.split("/")[0] for rel in taken})
        if clash:
            raise ConfigError(f"code {code_dir}: {', '.join(clash)} would replace what cloudq "
                              "bundles under that name; rename it or leave it out of the code")
        taken.update(user)
    return dict(sorted(taken.items()))


def _digest(parts: Sequence[str], files: dict[str, Source]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for rel, source in files.items():
        content = source if isinstance(source, bytes) else source.read_bytes()
        digest.update(rel.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


class _building:
    """Build ``target`` in a sibling temporary directory, renamed into place on success.

    ``marker`` is the file written last: a target that has it is complete (another build
    may have finished first; its tree is the same), one without it is a leftover, replaced."""

    def __init__(self, target: Path, marker: str) -> None:
        self.target = target
        self.marker = marker
        self.tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and not (self.target / self.marker).is_file():
            shutil.rmtree(self.target, ignore_errors=True)
            try:
                self.tmp.rename(self.target)
            except OSError:  # a concurrent build renamed its (identical) tree first
                if not (self.target / self.marker).is_file():
                    raise
        shutil.rmtree(self.tmp, ignore_errors=True)


def _check_size(sources: dict[str, Source]) -> None:
    sizes: dict[str, int] = {}
    for rel, source in sources.items():
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        sizes[rel.split("/")[0]] = sizes.get(rel.split("/")[0], 0) + size
    total = sum(sizes.values())
    if total > LAMBDA_UNZIPPED_LIMIT_BYTES:
        biggest = sorted(sizes.items(), key=lambda item: -item[1])[:5]
        listed = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in biggest)
        raise ConfigError(f"the Lambda code is {total / 1e6:.0f} MB unzipped, over Lambda's "
                          f"250 MB limit; the biggest entries: {listed}")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _manifest(staged: Path) -> dict[str, str]:
    try:
        data = json.loads((staged / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{staged}: not a tree made by stage_code (no {MANIFEST})") from exc
    return {"architecture": str(data["architecture"]),
            "python_version": str(data["python_version"])}


# -- pip ------------------------------------------------------------------------------------------
def _run_pip(command: list[str], packages: Sequence[str], platforms: Sequence[str],
             python_version: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"pip did not finish within {PIP_TIMEOUT_S} s") from exc
    if done.returncode == 0:
        return
    output = (done.stdout + done.stderr).strip()
    where = f"for {', '.join(platforms)}, CPython {python_version}"
    if "No module named pip" in output:
        raise ConfigError(f"pip is not installed for {sys.executable}: it installs the Lambda "
                          "dependencies")
    if OFFLINE.search(output):
        raise ConfigError(f"pip could not reach the package index (offline?) while installing "
                          f"the Lambda dependencies {where}: {_tail(output)}")
    missing = re.findall(r"No matching distribution found for (\S+)", output)
    what = ", ".join(missing) if missing else ", ".join(packages)
    raise ConfigError(f"pip could not install {what} {where} (only binary wheels are "
                      f"accepted): {_tail(output)}")


def _tail(output: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in output.splitlines()[-lines:] if line.strip())
