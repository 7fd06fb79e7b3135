"""docker/: the two Dockerfiles and the compose file, checked offline (no Docker engine here, issue 19).

The Dockerfiles are parsed (dockerfile-parse) and their build stage is replayed: what they copy is
enough to build the wheel. The compose file goes through `docker stack config`, the Docker client's
own Compose-schema validation (no engine needed), and its services are checked against the code.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from scriptpool.coordinator.cli.main import build_parser
from scriptpool.core.defaults import DEFAULT_QUEUE
from scriptpool.sandbox.limits import MAX_LIMITS
from tests.conftest import REPO

DOCKER = REPO / "docker"
IMAGES = {"coordinator": "server", "worker": "worker"}
"""Image -> the one install extra it carries."""


def _instructions(image: str) -> list[dict[str, Any]]:
    return [dict(item) for item in DockerfileParser(str(DOCKER / f"{image}.Dockerfile")).structure]


def _final_stage(image: str) -> list[dict[str, Any]]:
    instructions = _instructions(image)
    last_from = max(i for i, item in enumerate(instructions) if item["instruction"] == "FROM")
    return instructions[last_from:]


def _json_command(value: str) -> list[str]:
    command = yaml.safe_load(value)
    assert isinstance(command, list), f"not the exec (JSON) form: {value}"
    return [str(part) for part in command]


def _assert_cli_accepts(argv: list[str]) -> None:
    """`argv` (after the `scriptpool` entry point) is a command line our own parser takes."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing
        raise AssertionError(f"scriptpool does not accept {argv}") from exc


@pytest.mark.parametrize("image", IMAGES)
def test_base_images_are_pinned_to_a_version(image: str) -> None:
    parser = DockerfileParser(str(DOCKER / f"{image}.Dockerfile"))
    for base in parser.parent_images:
        name, _, tag = base.partition(":")
        assert tag and tag != "latest" and any(ch.isdigit() for ch in tag), base


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_installs_its_own_extra_and_runs_the_project_entry_point(image: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    final = _final_stage(image)
    installs = " ".join(
        item["value"] for item in final if item["instruction"] == "RUN" and "pip install" in item["value"]
    )
    extra = IMAGES[image]
    assert f'"scriptpool[{extra}]"' in installs and extra in project["optional-dependencies"]
    assert not any(f"scriptpool[{other}]" in installs for other in IMAGES.values() if other != extra)
    (entrypoint,) = [item["value"] for item in final if item["instruction"] == "ENTRYPOINT"]
    assert _json_command(entrypoint) == list(project["scripts"])  # ["scriptpool"]
    (cmd,) = [item["value"] for item in final if item["instruction"] == "CMD"]
    assert _json_command(cmd)[0] == image
    _assert_cli_accepts(_json_command(cmd))


def test_the_coordinator_image_runs_as_a_non_root_user() -> None:
    users = [item["value"] for item in _final_stage("coordinator") if item["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_the_worker_healthcheck_is_the_worker_probe() -> None:
    (check,) = [item["value"] for item in _final_stage("worker") if item["instruction"] == "HEALTHCHECK"]
    command = _json_command(check.split("CMD", 1)[1].strip())
    assert command[0] == "scriptpool"
    _assert_cli_accepts(command[1:])
    assert build_parser().parse_args(command[1:]).check


@pytest.mark.parametrize("image", IMAGES)
def test_the_build_stage_copies_enough_to_build_the_wheel(image: str, tmp_path: Path) -> None:
    """Replay the build stage's COPY lines into an empty directory, as its .dockerignore filters the
    context, and build the wheel there the way the RUN line does (offline: no build isolation)."""
    ignore = (DOCKER / f"{image}.Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:] for line in ignore if line.startswith("!")}
    context = tmp_path / "context"
    context.mkdir()
    for item in _instructions(image):
        if item["instruction"] != "COPY" or "--from" in item["value"]:
            continue
        *sources, _ = shlex.split(item["value"])
        for source in sources:
            assert source in kept, f"{source} is copied but the .dockerignore leaves it out of the context"
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(origin, context / source, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, context / source)
    out = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            ".",
        ],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("scriptpool-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("client.py", "coordinator/server.py", "workers/worker.py", "sandbox/jail/policy.py"):
        assert f"scriptpool/{module}" in names, module


# ------------------------------------------------------------------ compose


def _stack_config(path: Path) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    assert docker, "the docker client validates the compose file (`docker stack config`); it is not installed"
    return subprocess.run([docker, "stack", "config", "-c", str(path)], capture_output=True, text=True, timeout=60)


def _compose() -> dict[str, Any]:
    result = _stack_config(DOCKER / "compose.yaml")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_the_compose_file_is_valid_compose() -> None:
    assert set(_compose()["services"]) == {"redis", "coordinator", "worker"}


def test_the_validator_refuses_what_the_schema_forbids(tmp_path: Path) -> None:
    """The control for the test above: the same file with one unknown key is refused."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    compose["services"]["worker"]["replicas_typo"] = 4
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(compose))
    result = _stack_config(broken)
    assert result.returncode != 0 and "replicas_typo" in result.stderr


def test_redis_keeps_an_append_only_file_on_a_named_volume() -> None:
    config = _compose()
    redis = config["services"]["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    (volume,) = redis["volumes"]
    assert volume["type"] == "volume" and volume["target"] == "/data" and volume["source"] in config["volumes"]


def test_workers_scale_and_reach_the_coordinator_and_redis() -> None:
    services = _compose()["services"]
    worker, coordinator = services["worker"], services["coordinator"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N` needs neither
    listen_port = coordinator["command"][coordinator["command"].index("--listen") + 1].rsplit(":", 1)[1]
    assert worker["environment"]["SCRIPTPOOL_COORDINATOR"] == f"coordinator:{listen_port}"
    for service in (worker, coordinator):
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert service["environment"]["SCRIPTPOOL_QUEUE"] == DEFAULT_QUEUE
        _assert_cli_accepts(service["command"])


def test_a_stopping_worker_has_time_to_finish_the_longest_job() -> None:
    grace = _compose()["services"]["worker"]["stop_grace_period"]  # e.g. "16m0s"
    minutes, _, seconds = grace.rstrip("s").partition("m")
    assert int(minutes or 0) * 60 + int(seconds or 0) >= MAX_LIMITS.wall_time_ms / 1000


def test_only_the_worker_keeps_a_capability_and_it_is_sys_admin() -> None:
    services = _compose()["services"]
    assert services["worker"]["cap_drop"] == ["ALL"] and services["worker"]["cap_add"] == ["SYS_ADMIN"]
    assert services["coordinator"]["cap_drop"] == ["ALL"] and "cap_add" not in services["coordinator"]
