"""Worker settings from the environment: the values a person sets, and clear refusals of bad ones."""

from __future__ import annotations

import pytest

from scriptpool.errors import InvalidArgument
from scriptpool.workers.settings import WorkerSettings


def test_jobs_per_child_defaults_to_reuse_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("SCRIPTPOOL_JOBS_PER_CHILD", raising=False)
    assert WorkerSettings.from_env().jobs_per_child == 64
    monkeypatch.setenv("SCRIPTPOOL_JOBS_PER_CHILD", "1")
    assert WorkerSettings.from_env().jobs_per_child == 1


@pytest.mark.parametrize("bad", ["0", "-3", "many", "1.5"])
def test_a_bad_jobs_per_child_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SCRIPTPOOL_JOBS_PER_CHILD", bad)
    with pytest.raises(InvalidArgument, match="SCRIPTPOOL_JOBS_PER_CHILD"):
        WorkerSettings.from_env()


def test_a_worker_without_redis_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(InvalidArgument, match="REDIS_URL"):
        WorkerSettings.from_env()


def test_the_call_stream_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("SCRIPTPOOL_CALL_STREAM", raising=False)
    assert WorkerSettings.from_env().call_stream is True
    monkeypatch.setenv("SCRIPTPOOL_CALL_STREAM", "0")
    assert WorkerSettings.from_env().call_stream is False


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_lease_is_refused_by_worker_and_coordinator_alike(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    from scriptpool.coordinator.settings import Settings

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SCRIPTPOOL_LEASE_SECONDS", bad)
    with pytest.raises(InvalidArgument, match="SCRIPTPOOL_LEASE_SECONDS|lease_seconds"):
        WorkerSettings.from_env()
    with pytest.raises(InvalidArgument, match="SCRIPTPOOL_LEASE_SECONDS|lease_seconds"):
        Settings.from_env()


def test_the_coordinator_reads_the_workers_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its sweeper holds expiries for a lease interval after an outage: the same interval as the workers'."""
    from scriptpool.coordinator.settings import Settings

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("SCRIPTPOOL_LEASE_SECONDS", raising=False)
    assert Settings.from_env().lease_seconds == WorkerSettings.from_env().lease_seconds == 15
    monkeypatch.setenv("SCRIPTPOOL_LEASE_SECONDS", "2.5")
    assert Settings.from_env().lease_seconds == WorkerSettings.from_env().lease_seconds == 2.5
