"""TLS between clients, workers and the coordinator (issue 18 item 2, docs/adr/0018-tls.md).

Every certificate is made by the tests (tests/integration/tls_certs.py): a CA and a server
certificate for 127.0.0.1/localhost work end to end, through a real worker process whose global
calls go over TLS; an expired certificate, one signed by another CA and one for another host name
are each refused by the client with `TlsFailed` saying why; a plaintext client is refused by a
TLS-only coordinator. With mutual TLS, a worker (or client) without a client certificate signed by
the coordinator's client CA cannot reach it, and one with such a certificate can.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.cli.main import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.errors import InvalidArgument, NotFound, TlsFailed, Unavailable
from scriptpool.outcomes import Outcome
from scriptpool.tls import ClientTls
from tests.conftest import CLI, start_worker, stop_process
from tests.integration.helpers import outcome, result_of, run_lua
from tests.integration.tls_certs import CertificateSet, KeyPair, make_certificates
from tests.integration.up_process import cli, free_port, start_up, up_env

GLOBAL_CALLS = """
State.set("global", "tls-probe", 41)
local seen = State.get("global", "tls-probe")
return seen + 1
"""
"""A job whose script makes global calls (the first unary, the next on the call stream)."""
MISSING_JOB = str(uuid.uuid4())
"""A well-formed job id no job has: the coordinator answers NOT_FOUND once the call reaches it."""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@contextmanager
def tls_coordinator(
    redis_server: PrivateRedis, served: KeyPair, client_ca: Path | None = None
) -> Iterator[tuple[RunningCoordinator, str, str]]:
    """A coordinator serving TLS with `served` on a free loopback port (own queue); yields it, its
    address and the queue."""
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        redis_url=redis_server.url,
        listen="127.0.0.1:0",
        queue=queue,
        max_wait_seconds=30,
        tls_cert=served.cert,
        tls_key=served.key,
        tls_client_ca=client_ca,
    )
    running = start_coordinator(settings)
    try:
        yield running, f"127.0.0.1:{running.port}", queue
    finally:
        running.stop(grace=1)


def _env(redis_url: str, address: str, queue: str, **tls: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTPOOL_")}
    variables = {"ca": "SCRIPTPOOL_TLS_CA", "cert": "SCRIPTPOOL_TLS_CLIENT_CERT", "key": "SCRIPTPOOL_TLS_CLIENT_KEY"}
    return {
        **base,
        "REDIS_URL": redis_url,
        "SCRIPTPOOL_COORDINATOR": address,
        "SCRIPTPOOL_QUEUE": queue,
        **{variables[name]: str(path) for name, path in tls.items()},
    }


@contextmanager
def tls_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(env["REDIS_URL"], env["SCRIPTPOOL_COORDINATOR"], log, extra_env=env)
    try:
        yield proc
    finally:
        stop_process(proc)


def test_a_good_certificate_works_end_to_end_through_a_tls_worker(
    redis_server: PrivateRedis, certs: CertificateSet, tmp_path: Path
) -> None:
    with tls_coordinator(redis_server, certs.server) as (running, address, queue):
        env = _env(redis_server.url, address, queue, ca=certs.ca.cert)
        with (
            tls_worker(env, tmp_path / "worker.log"),
            ScriptpoolClient(address, running.auth.create_api_key("tls-ok"), tls_ca=certs.ca.cert) as client,
        ):
            job = run_lua(client, GLOBAL_CALLS)
            assert result_of(job) == 42, (tmp_path / "worker.log").read_text()
            check = subprocess.run(
                [*CLI, "worker", "--check"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
            )
            assert check.returncode == EXIT_OK, check.stdout + check.stderr
            assert "ok coordinator" in check.stdout


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        ("expired", "certificate has expired"),
        ("other_ca_server", "not signed by a CA the client trusts"),
        ("wrong_host", "not for the host name dialled"),
    ],
)
def test_a_bad_server_certificate_is_refused_with_its_reason(
    redis_server: PrivateRedis, certs: CertificateSet, served: str, reason: str
) -> None:
    pair: KeyPair = getattr(certs, served)
    with tls_coordinator(redis_server, pair) as (running, address, _):
        key = running.auth.create_api_key("tls-refused")
        # reconnect_seconds well past the test's timeout: a refused certificate must not be resent.
        with ScriptpoolClient(address, key, tls_ca=certs.ca.cert, reconnect_seconds=3600) as client:
            with pytest.raises(TlsFailed) as refused:
                client.get_job(MISSING_JOB)
    assert reason in refused.value.message
    assert refused.value.code == "UNAVAILABLE"


def test_the_cli_says_why_in_one_line(redis_server: PrivateRedis, certs: CertificateSet) -> None:
    with tls_coordinator(redis_server, certs.expired) as (running, address, _):
        key = running.auth.create_api_key("tls-cli")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTPOOL_")}
        common = ["--coordinator", address, "--api-key", key]
        refused = subprocess.run(
            [*CLI, "job", *common, "--tls-ca", str(certs.ca.cert), "get", MISSING_JOB],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert refused.returncode == EXIT_UNAVAILABLE
    lines = refused.stderr.splitlines()  # gRPC's own log of the handshake is kept quiet
    assert len(lines) == 1 and lines[0].startswith("error: UNAVAILABLE: TLS with the coordinator failed: ")
    assert "certificate has expired" in lines[0]


def test_a_plaintext_client_is_refused_by_a_tls_coordinator(redis_server: PrivateRedis, certs: CertificateSet) -> None:
    with tls_coordinator(redis_server, certs.server) as (running, address, _):
        key = running.auth.create_api_key("tls-plain")
        with ScriptpoolClient(address, key, reconnect_seconds=0) as client:
            with pytest.raises(Unavailable) as refused:
                client.get_job(MISSING_JOB)
        assert "TLS" in refused.value.message
        with ScriptpoolClient(address, key, tls_ca=certs.ca.cert) as client:  # the same call over TLS is answered
            with pytest.raises(NotFound):
                client.get_job(MISSING_JOB)


def test_mutual_tls_keeps_out_workers_and_clients_without_a_client_certificate(
    redis_server: PrivateRedis, certs: CertificateSet, tmp_path: Path
) -> None:
    with tls_coordinator(redis_server, certs.server, client_ca=certs.ca.cert) as (running, address, queue):
        key = running.auth.create_api_key("tls-mutual")
        with ScriptpoolClient(address, key, tls_ca=certs.ca.cert, reconnect_seconds=0) as bare:
            with pytest.raises(Unavailable):
                bare.get_job(MISSING_JOB)
        other = ClientTls(
            ca=certs.ca.cert, client_cert=certs.other_ca_client.cert, client_key=certs.other_ca_client.key
        )
        with ScriptpoolClient(address, key, tls=other, reconnect_seconds=0) as foreign:
            with pytest.raises(Unavailable):
                foreign.get_job(MISSING_JOB)
        mine = ClientTls(ca=certs.ca.cert, client_cert=certs.worker_client.cert, client_key=certs.worker_client.key)
        with ScriptpoolClient(address, key, tls=mine) as client:
            with tls_worker(_env(redis_server.url, address, queue, ca=certs.ca.cert), tmp_path / "bare.log"):
                refused = run_lua(client, GLOBAL_CALLS)
            assert outcome(refused) is Outcome.SCRIPT_ERROR  # its first global call could not reach the coordinator
            assert refused.result.message.startswith("UNAVAILABLE") and "client certificate" in refused.result.message
            env = _env(
                redis_server.url,
                address,
                queue,
                ca=certs.ca.cert,
                cert=certs.worker_client.cert,
                key=certs.worker_client.key,
            )
            with tls_worker(env, tmp_path / "mutual.log"):
                assert result_of(run_lua(client, GLOBAL_CALLS)) == 42


def test_unusable_client_files_are_a_clear_error(certs: CertificateSet, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read TLS CA"):
        ScriptpoolClient("127.0.0.1:9", "k", tls_ca=tmp_path / "missing.pem")
    with pytest.raises(InvalidArgument, match="does not match"):
        ScriptpoolClient(
            "127.0.0.1:9", "k", tls_ca=certs.ca.cert, tls_client_cert=certs.worker_client.cert,
            tls_client_key=certs.server.key,
        )  # fmt: skip
    with pytest.raises(InvalidArgument, match="needs both"):
        ScriptpoolClient("127.0.0.1:9", "k", tls_ca=certs.ca.cert, tls_client_cert=certs.worker_client.cert)


@pytest.mark.parametrize("broken", ["missing", "mismatched", "client_ca_not_pem", "cert_only"])
def test_the_coordinator_refuses_bad_tls_files_in_one_line(certs: CertificateSet, tmp_path: Path, broken: str) -> None:
    flags = {
        "missing": ["--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(certs.server.key)],
        "mismatched": ["--tls-cert", str(certs.server.cert), "--tls-key", str(certs.expired.key)],
        "client_ca_not_pem": [
            "--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key),
            "--tls-client-ca", str(certs.server.key),
        ],
        "cert_only": ["--tls-cert", str(certs.server.cert)],
    }[broken]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTPOOL_")}
    # A Redis nobody listens on: the files are checked before anything else is started.
    result = subprocess.run(
        [*CLI, "coordinator", "--redis-url", "redis://127.0.0.1:9/0", "--listen", "127.0.0.1:0", *flags],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == EXIT_USAGE, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: INVALID_ARGUMENT: TLS") or "cannot read TLS" in result.stderr


def test_worker_check_names_the_tls_reason(redis_server: PrivateRedis, certs: CertificateSet, tmp_path: Path) -> None:
    with tls_coordinator(redis_server, certs.other_ca_server) as (_, address, queue):
        env = _env(redis_server.url, address, queue, ca=certs.ca.cert)
        check = subprocess.run(
            [*CLI, "worker", "--check", "--no-worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert check.returncode == EXIT_UNAVAILABLE
    assert f"FAIL coordinator: {address}: TLS: the coordinator's certificate is not signed by a CA" in check.stdout


def test_up_serves_tls_on_its_tcp_address_and_its_workers_use_the_socket(certs: CertificateSet, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    address = f"127.0.0.1:{free_port()}"
    env = up_env(state_dir)
    tls = ["--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key)]
    up = start_up(state_dir, address, tmp_path / "up.log", env=env, extra=tls)
    try:
        script = tmp_path / "calls.lua"
        script.write_text(GLOBAL_CALLS)
        ran = cli(["run", str(script), "--coordinator", address, "--tls-ca", str(certs.ca.cert)], env)
        assert ran.returncode == EXIT_OK, ran.stderr
        assert ran.stdout.strip().splitlines()[-1] == "42"
        key = (state_dir / "api-key").read_text().strip()
        with ScriptpoolClient(address, key, reconnect_seconds=0) as plain, pytest.raises(Unavailable):
            plain.get_job(MISSING_JOB)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            assert up.wait(timeout=30) == 0
        finally:
            stop_process(up)  # type: ignore[arg-type]
            if up.stdout is not None:
                up.stdout.close()
