"""Strict jail by default (issue 17 item 8): a worker, `up` and `demo` refuse to start when a required
sandbox layer is missing on the host, naming the layer, why and how to provide it; the operator can
accept a named layer as missing (`--allow-missing-layer`, SCRIPTPOOL_ALLOW_MISSING_LAYERS); `doctor`
says the same.

The host here provides every layer, so these tests take one away for real: the command runs under
`setpriv --bounding-set -sys_admin`, which leaves root without CAP_SYS_ADMIN, and the jail can then no
longer give a job its own network namespace (`unshare(CLONE_NEWNET)` fails with EPERM).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.cli.main import EXIT_JAIL_INCOMPLETE, EXIT_OK, EXIT_USAGE
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from tests.conftest import CLI, REPO
from tests.integration.helpers import outcome, result_of
from tests.integration.up_process import free_port, up_env

WITHOUT_SYS_ADMIN = ("setpriv", "--bounding-set", "-sys_admin")
QUEUE = "strict-jail"


def _run(
    args: list[str], env: dict[str, str], *, capped: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    prefix = WITHOUT_SYS_ADMIN if capped else ()
    assert not capped or shutil.which("setpriv"), "these tests need util-linux's setpriv to take a layer away"
    return subprocess.run([*prefix, *CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SCRIPTPOOL_ALLOW_MISSING_LAYERS"}
    return {**env, **extra}


def _assert_refusal(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == EXIT_JAIL_INCOMPLETE, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "network-namespace" in line and "Operation not permitted" in line
    assert "CAP_SYS_ADMIN" in line  # how to provide it
    assert "--allow-missing-layer network-namespace" in line  # how to go without it, explicitly
    assert "Traceback" not in result.stderr


def test_the_host_provides_every_layer_without_the_cap() -> None:
    """The premise of the other tests: the same command with CAP_SYS_ADMIN passes."""
    assert _run(["doctor"], _env(), capped=False).returncode == EXIT_OK


def test_doctor_names_the_missing_layer_and_how_to_provide_it() -> None:
    result = _run(["doctor"], _env())
    assert result.returncode == EXIT_JAIL_INCOMPLETE, result.stdout + result.stderr
    missing = [line for line in result.stdout.splitlines() if line.startswith("UNAVAILABLE")]
    assert len(missing) == 1 and "network-namespace" in missing[0] and "CAP_SYS_ADMIN" in missing[0]
    assert "--allow-missing-layer network-namespace" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_doctor_passes_when_the_layer_is_allowed_missing(how: str) -> None:
    if how == "flag":
        result = _run(["doctor", "--allow-missing-layer", "network-namespace"], _env())
    else:
        result = _run(["doctor"], _env(SCRIPTPOOL_ALLOW_MISSING_LAYERS="network-namespace"))
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert not any(line.startswith("UNAVAILABLE") for line in result.stdout.splitlines())
    allowed = [line for line in result.stdout.splitlines() if line.startswith("ALLOWED")]
    assert len(allowed) == 1 and "network-namespace" in allowed[0]


def test_allowing_another_layer_does_not_excuse_this_one() -> None:
    result = _run(["doctor", "--allow-missing-layer", "landlock"], _env())
    assert result.returncode == EXIT_JAIL_INCOMPLETE


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [
        (["worker", "--allow-missing-layer", "network"], {}),
        (["doctor", "--allow-missing-layer", ""], {}),
        (["worker"], {"SCRIPTPOOL_ALLOW_MISSING_LAYERS": "seccomp,bogus"}),
        (["up", "--allow-missing-layer", "Landlock"], {}),
    ],
)
def test_an_unknown_layer_name_is_one_line_and_exit_2(
    args: list[str], extra_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**up_env(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0", **extra_env}
    result = _run(args, env, capped=False)
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown sandbox layer" in lines[0] and "network-namespace" in lines[0], lines


@pytest.fixture
def coordinator(redis_server: PrivateRedis) -> Iterator[RunningCoordinator]:
    """A coordinator of its own queue, so only the worker under test takes its jobs."""
    settings = Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue=QUEUE, max_wait_seconds=30)
    running = start_coordinator(settings)
    yield running
    running.stop(grace=1)


def _worker_env(redis_server: PrivateRedis, running: RunningCoordinator, **extra: str) -> dict[str, str]:
    return _env(
        REDIS_URL=redis_server.url,
        SCRIPTPOOL_COORDINATOR=f"127.0.0.1:{running.port}",
        SCRIPTPOOL_QUEUE=QUEUE,
        **extra,
    )


def test_a_worker_refuses_to_start_without_a_required_layer(
    redis_server: PrivateRedis, coordinator: RunningCoordinator
) -> None:
    _assert_refusal(_run(["worker", "--burst"], _worker_env(redis_server, coordinator)))


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_allowed_missing_layer_lets_the_worker_run_jobs(
    how: str, redis_server: PrivateRedis, coordinator: RunningCoordinator
) -> None:
    key = coordinator.auth.create_api_key("strict-jail")
    with ScriptpoolClient(f"127.0.0.1:{coordinator.port}", key) as client:
        job_id = client.submit(Language.LUA, "return 6 * 7").id
        if how == "flag":
            result = _run(
                ["worker", "--burst", "--allow-missing-layer", "network-namespace"],
                _worker_env(redis_server, coordinator),
            )
        else:
            env = _worker_env(redis_server, coordinator, SCRIPTPOOL_ALLOW_MISSING_LAYERS="network-namespace")
            result = _run(["worker", "--burst"], env)
        assert result.returncode == EXIT_OK, result.stderr
        assert "running WITHOUT the network-namespace layer" in result.stderr
        job = client.wait(job_id, timeout=30)
    assert outcome(job) is Outcome.OK and result_of(job) == 42


def test_up_refuses_before_starting_anything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = _run(["up", "--listen", f"127.0.0.1:{free_port()}"], up_env(state), timeout=120)
    _assert_refusal(result)
    assert not (state / "redis").exists()  # no private Redis was started


def _container_capabilities() -> list[str]:
    """What docker/compose.yaml and docker/kubernetes/worker.yaml leave the worker (they must agree)."""
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())["services"]["worker"]
    worker = [d for d in yaml.safe_load_all((REPO / "docker" / "kubernetes" / "worker.yaml").read_text()) if d]
    (container,) = worker[0]["spec"]["template"]["spec"]["containers"]
    assert compose["cap_drop"] == container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    kept: list[str] = compose["cap_add"]
    assert kept == container["securityContext"]["capabilities"]["add"]
    return kept


def test_the_capabilities_the_containers_grant_are_enough_for_every_layer() -> None:
    bounding = ",".join(["-all", *(f"+{cap.lower()}" for cap in _container_capabilities())])
    result = subprocess.run(
        ["setpriv", "--bounding-set", bounding, *CLI, "doctor"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert "UNAVAILABLE" not in result.stdout and "ALLOWED" not in result.stdout


def test_with_no_capability_at_all_only_the_network_namespace_is_missing() -> None:
    """The documented non-root alternative: everything but the network namespace still holds."""
    command = ["setpriv", "--bounding-set", "-all", *CLI, "doctor"]
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_JAIL_INCOMPLETE
    missing = [line.split()[1].rstrip(":") for line in result.stdout.splitlines() if line.startswith("UNAVAILABLE")]
    assert missing == ["network-namespace"]
    allowed = subprocess.run(
        [*command, "--allow-missing-layer", "network-namespace"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert allowed.returncode == EXIT_OK, allowed.stdout
