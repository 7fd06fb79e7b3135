"""The job-credential cache: what it may keep, and when it must forget."""

from __future__ import annotations

from scriptpool.coordinator.credential_cache import CachedCredential, JobCredentialCache

CRED = CachedCredential(principal="alice", job_id="job-1", session_id="s-1")


def _listening_cache(ttl: float = 10.0) -> JobCredentialCache:
    cache = JobCredentialCache(ttl_seconds=ttl)
    cache.listening(True)
    return cache


def test_keeps_a_verified_credential_while_listening() -> None:
    cache = _listening_cache()
    cache.put("d1", CRED)
    assert cache.get("d1") == CRED


def test_caches_nothing_until_the_finish_channel_is_listened_to() -> None:
    cache = JobCredentialCache()
    cache.put("d1", CRED)
    assert cache.get("d1") is None and len(cache) == 0


def test_losing_the_listener_empties_the_cache_and_stops_caching() -> None:
    cache = _listening_cache()
    cache.put("d1", CRED)
    cache.listening(False)
    assert cache.get("d1") is None
    cache.put("d1", CRED)
    assert cache.get("d1") is None


def test_a_finished_job_is_forgotten() -> None:
    cache = _listening_cache()
    cache.put("d1", CRED)
    cache.put("d2", CachedCredential(principal="bob", job_id="job-2", session_id=""))
    cache.forget_job("job-1")
    assert cache.get("d1") is None
    assert cache.get("d2") is not None


def test_a_lookup_racing_the_finish_is_not_cached() -> None:
    """Read from Redis just before the finish, stored just after it: must not be kept."""
    cache = _listening_cache()
    cache.forget_job("job-1")
    cache.put("d1", CRED)
    assert cache.get("d1") is None


def test_entries_expire() -> None:
    cache = _listening_cache(ttl=0.0)
    cache.put("d1", CRED)
    assert cache.get("d1") is None


def test_size_is_bounded() -> None:
    cache = JobCredentialCache(max_entries=3)
    cache.listening(True)
    for index in range(10):
        cache.put(f"d{index}", CachedCredential(principal="p", job_id=f"job-{index}", session_id=""))
    assert len(cache) <= 3
    assert cache.get("d9") is not None
