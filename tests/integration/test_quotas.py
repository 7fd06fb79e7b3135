"""Per-principal quotas and admission control (issue 18 item 3, docs/adr/0020-quotas.md), over real
gRPC and Redis: each quota at its edge (at the limit allowed, one more RESOURCE_EXHAUSTED naming the
quota, its limit and its use), a SubmitJobs batch refused whole with nothing written, the queued-jobs
count after cancel, finish and `rq empty`, the token bucket's refill, overrides capped by the server
maximum, and `scriptpool quota`."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from redis import Redis
from rq import Queue

from scriptpool.client import ScriptpoolClient, job_request
from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.metrics import REGISTRY
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.stores.admission import Admission
from scriptpool.coordinator.stores.jobs import JobStore
from scriptpool.coordinator.stores.quotas import QuotaStore, maxima
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.sweeper import LeaseSweeper
from scriptpool.core.keys import (
    job_key,
    principal_sessions_key,
    queued_jobs_key,
    quota_key,
    running_jobs_key,
    state_bytes_key,
    submit_bucket_key,
)
from scriptpool.core.lean_redis import LeanPool
from scriptpool.errors import InvalidArgument, ResourceExhausted
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.limits import LimitPolicy
from scriptpool.v1 import events_pb2, jobs_pb2, sessions_pb2, state_pb2
from scriptpool.values import to_value
from tests.conftest import CLI, Stack, wait_for

from .helpers import outcome, run_lua


@dataclass
class Quoted:
    """A coordinator of its own on a queue no worker serves (its jobs stay queued), one principal."""

    client: ScriptpoolClient
    principal: str
    queue: str
    redis: Redis
    quotas: QuotaStore
    sweeper: LeaseSweeper

    def queued(self) -> int:
        return int(self.redis.zcard(queued_jobs_key(self.principal)))

    def rq_count(self) -> int:
        return int(Queue(self.queue, connection=self.redis).count)


def _settings(stack: Stack, queue: str, **overrides: object) -> Settings:
    settings = Settings(redis_url=stack.redis_url, listen="127.0.0.1:0", queue=queue, max_wait_seconds=30)
    return replace(settings, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def quoted(stack: Stack, redis_client: Redis) -> Iterator[Quoted]:
    queue = f"scriptpool-quota-{uuid.uuid4().hex[:8]}"
    settings = _settings(stack, queue)
    running = start_coordinator(settings)
    principal = f"q-{uuid.uuid4().hex[:12]}"
    try:
        with ScriptpoolClient(f"127.0.0.1:{running.port}", running.auth.create_api_key(principal)) as client:
            quotas = QuotaStore(redis_client, maxima(settings))
            yield Quoted(client, principal, queue, redis_client, quotas, running.sweeper)
    finally:
        running.stop(grace=0)


def _lua(n: int) -> list[jobs_pb2.SubmitJobRequest]:
    return [job_request(Language.LUA, "return 1") for _ in range(n)]


def _submit_unkeyed(client: ScriptpoolClient) -> jobs_pb2.Job:
    return client.submit(Language.LUA, "return 1", idempotency_key="")


def test_queued_jobs_at_the_limit_pass_one_more_is_refused_naming_quota_limit_and_use(quoted: Quoted) -> None:
    quoted.quotas.set(quoted.principal, {"queued_jobs": 3})
    jobs = [_submit_unkeyed(quoted.client), quoted.client.submit(Language.LUA, "return 1")]
    list(quoted.client.submit_many(_lua(1)))
    assert quoted.queued() == 3
    for key in ("", None):  # without an idempotency key, and with one
        with pytest.raises(ResourceExhausted, match=r"quota queued_jobs .*: 3 jobs in use, limit 3 .*1 more would"):
            quoted.client.submit(Language.LUA, "return 1", idempotency_key=key)
    assert quoted.queued() == 3 and quoted.rq_count() == 3
    quoted.client.cancel(jobs[0].id)  # a cancelled job leaves the count at once
    assert quoted.queued() == 2
    _submit_unkeyed(quoted.client)
    assert quoted.queued() == 3


def _refusals(quota: str) -> float:
    return REGISTRY.get_sample_value("scriptpool_quota_refusals_total", {"quota": quota}) or 0.0


def test_a_batch_over_the_queued_jobs_quota_is_refused_whole_with_nothing_written(quoted: Quoted) -> None:
    quoted.quotas.set(quoted.principal, {"queued_jobs": 3})
    list(quoted.client.submit_many(_lua(2)))
    refusals = _refusals("queued_jobs")
    sessions_before = quoted.redis.zcard(principal_sessions_key(quoted.principal))
    keys_before = quoted.redis.dbsize()
    with pytest.raises(ResourceExhausted, match=r"quota queued_jobs .*: 2 jobs in use, limit 3 .*2 more would pass"):
        list(quoted.client.submit_many(_lua(2)))
    assert quoted.queued() == 2 and quoted.rq_count() == 2
    assert quoted.redis.zcard(principal_sessions_key(quoted.principal)) == sessions_before  # no session made
    assert quoted.redis.dbsize() == keys_before  # no job record, credential, RQ job or idempotency key
    assert [a.job.status for a in quoted.client.submit_many(_lua(1))] == [jobs_pb2.JOB_STATUS_QUEUED]
    assert _refusals("queued_jobs") == refusals + 1  # (the coordinator runs in this process)


def test_rq_empty_gives_the_queued_jobs_quota_back(quoted: Quoted) -> None:
    quoted.quotas.set(quoted.principal, {"queued_jobs": 2})
    jobs = [_submit_unkeyed(quoted.client) for _ in range(2)]
    Queue(quoted.queue, connection=quoted.redis).empty()  # type: ignore[no-untyped-call]  # `rq empty`

    def reconciled() -> bool:
        # The sweeper does this every 2 s, 1000 job records a time; a test Redis holding many (a
        # 10,000-job backlog test ran before) takes long to go round, so the slices are asked for here.
        quoted.sweeper.reconcile_queued()
        return all(quoted.client.get_job(job.id).status == jobs_pb2.JOB_STATUS_FINISHED for job in jobs)

    assert wait_for(reconciled, timeout=60)
    for job in jobs:
        assert outcome(quoted.client.get_job(job.id)) is Outcome.CANCELLED
    assert quoted.queued() == 0
    _submit_unkeyed(quoted.client)


def test_a_stale_queued_id_is_forgotten_when_it_would_refuse(quoted: Quoted) -> None:
    """An id whose record left `queued` unseen (deleted by hand) does not hold the quota for ever."""
    quoted.quotas.set(quoted.principal, {"queued_jobs": 1})
    job = _submit_unkeyed(quoted.client)
    quoted.redis.delete(job_key(job.id))  # (what an operator's DEL does)
    again = _submit_unkeyed(quoted.client)
    assert quoted.redis.zrange(queued_jobs_key(quoted.principal), 0, -1) == [again.id.encode()]


def test_an_id_whose_rq_job_is_gone_is_forgotten_when_it_would_refuse(quoted: Quoted) -> None:
    """After `rq empty` the quota is given back at the next submission that needs it, before the
    sweeper's walk of the job records reaches the emptied ones."""
    quoted.quotas.set(quoted.principal, {"queued_jobs": 1})
    emptied = _submit_unkeyed(quoted.client)
    Queue(quoted.queue, connection=quoted.redis).empty()  # type: ignore[no-untyped-call]  # `rq empty`
    assert quoted.redis.hget(job_key(emptied.id), "status") == b"queued"  # (not reconciled yet)
    again = _submit_unkeyed(quoted.client)
    assert quoted.redis.zrange(queued_jobs_key(quoted.principal), 0, -1) == [again.id.encode()]


def test_finished_jobs_leave_the_queued_and_running_counts(client: ScriptpoolClient, redis_client: Redis) -> None:
    job = run_lua(client, "return 1")
    assert outcome(job) is Outcome.OK
    principal = job.principal
    assert redis_client.zscore(queued_jobs_key(principal), job.id) is None
    assert not redis_client.sismember(running_jobs_key(principal), job.id)


def test_the_token_bucket_refuses_past_the_burst_with_a_retry_hint_and_refills(quoted: Quoted) -> None:
    quoted.quotas.set(quoted.principal, {"submissions_per_second": 4, "submission_burst": 3})
    list(quoted.client.submit_many(_lua(3)))  # exactly the burst
    with pytest.raises(ResourceExhausted) as refused:
        _submit_unkeyed(quoted.client)
    message = refused.value.message
    assert "quota submissions_per_second" in message and "limit 4 jobs per second, burst 3" in message
    assert "0 tokens left, 1 needed; retry after 0." in message
    assert quoted.queued() == 3  # nothing written
    assert _refusals("submissions_per_second") >= 1

    def one_more() -> bool:
        try:
            _submit_unkeyed(quoted.client)
        except ResourceExhausted:
            return False
        return True

    assert wait_for(one_more, timeout=5, interval=0.05)  # refilled at 4 per second
    assert quoted.queued() == 4


def test_a_rate_of_0_admits_nothing(quoted: Quoted) -> None:
    quoted.quotas.set(quoted.principal, {"submissions_per_second": 0})
    with pytest.raises(ResourceExhausted, match="its rate is 0"):
        _submit_unkeyed(quoted.client)  # (a fresh bucket would otherwise start full)
    assert quoted.queued() == 0


def test_a_batch_over_the_burst_can_never_pass_and_says_so(quoted: Quoted) -> None:
    quoted.quotas.set(quoted.principal, {"submission_burst": 2})
    with pytest.raises(ResourceExhausted, match=r"a batch of 3 jobs is over its burst of 2: this submission can never"):
        list(quoted.client.submit_many(_lua(3)))
    assert quoted.queued() == 0 and not quoted.redis.exists(submit_bucket_key(quoted.principal))


def test_an_override_is_capped_by_the_server_maximum_where_it_is_read(stack: Stack, redis_client: Redis) -> None:
    queue = f"scriptpool-quota-{uuid.uuid4().hex[:8]}"
    running = start_coordinator(_settings(stack, queue, max_queued_jobs_per_principal=2))
    principal = f"q-{uuid.uuid4().hex[:12]}"
    redis_client.hset(quota_key(principal), "queued_jobs", 50)  # written under a higher maximum
    try:
        with ScriptpoolClient(f"127.0.0.1:{running.port}", running.auth.create_api_key(principal)) as client:
            _submit_unkeyed(client)
            _submit_unkeyed(client)
            with pytest.raises(ResourceExhausted, match=r"2 jobs in use, limit 2 .*max_queued_jobs_per_principal"):
                _submit_unkeyed(client)
    finally:
        running.stop(grace=0)


def test_an_override_above_the_server_maximum_is_refused(redis_client: Redis) -> None:
    quotas = QuotaStore(redis_client, maxima(Settings()))
    principal = f"q-{uuid.uuid4().hex[:12]}"
    with pytest.raises(InvalidArgument, match=r"queued_jobs: 100001 is above the server maximum of 100000"):
        quotas.set(principal, {"sessions": 5, "queued_jobs": 100_001})
    assert not redis_client.exists(quota_key(principal))  # none of them written


def test_sessions_state_bytes_and_subscriptions_take_the_principals_override(quoted: Quoted) -> None:
    state = quoted.client.state
    state.set(state_pb2.SetStateRequest(scope="global", key="k", value=to_value("12345678")))
    held = int(quoted.redis.get(state_bytes_key(quoted.principal)) or 0)
    quoted.quotas.set(quoted.principal, {"sessions": 1, "state_bytes": held, "subscriptions": 1})
    state.set(state_pb2.SetStateRequest(scope="global", key="k", value=to_value("87654321")))  # same size: fits
    with pytest.raises(ResourceExhausted, match=rf"quota state_bytes .*: {held} bytes in use, limit {held} "):
        state.set(state_pb2.SetStateRequest(scope="global", key="j", value=to_value("")))
    sessions = quoted.client.sessions
    sessions.create(sessions_pb2.CreateSessionRequest(name="one"))
    with pytest.raises(ResourceExhausted, match=r"quota sessions .*: 1 sessions in use, limit 1 "):
        sessions.create(sessions_pb2.CreateSessionRequest(name="two"))
    quoted.client.events.subscribe(events_pb2.SubscribeRequest(pattern="x"))
    with pytest.raises(ResourceExhausted, match=r"quota subscriptions .*: 1 subscriptions in use, limit 1 "):
        quoted.client.events.subscribe(events_pb2.SubscribeRequest(pattern="y"))


def _cli(args: list[str], redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url}
    return subprocess.run([*CLI, "quota", *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_quota_cli_sets_shows_limits_and_use_and_refuses_bad_values(quoted: Quoted, stack: Stack) -> None:
    who = quoted.principal
    done = _cli(["set", who, "--queued-jobs", "5", "--submissions-per-second", "1234.5", "--submission-burst", "7"],
                stack.redis_url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    _submit_unkeyed(quoted.client)
    shown = _cli(["get", who, "--json"], stack.redis_url)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)["quotas"]
    assert report["queued_jobs"] == {"limit": 5, "override": 5, "server_maximum": 100_000, "in_use": 1,
                                     "enforced": True}  # fmt: skip
    assert report["submissions_per_second"]["limit"] == 1234.5  # (stored exactly)
    assert 6 <= report["submission_burst"]["in_use"] <= 7  # tokens left after one
    assert report["running_jobs"]["enforced"] is False
    text = _cli(["get", who], stack.redis_url).stdout
    assert "queued_jobs" in text and "override" in text
    for bad, says in (
        (["--queued-jobs", "100001"], "above the server maximum of 100000"),
        (["--state-bytes", "nan"], "nan is not a limit"),
        (["--sessions", "-1"], "-1 is not a limit"),
        (["--subscriptions", "1.5"], "not a whole number"),
        ([], "give at least one quota"),
    ):
        refused = _cli(["set", who, *bad], stack.redis_url)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and says in refused.stderr, refused.stderr
    assert _cli(["reset", who, "--quota", "queued_jobs"], stack.redis_url).returncode == 0
    assert quoted.quotas.overrides(who) == {"submissions_per_second": 1234.5, "submission_burst": 7}


def test_a_refused_submission_costs_no_tokens(quoted: Quoted) -> None:
    quoted.quotas.set(quoted.principal, {"queued_jobs": 1, "submission_burst": 5, "submissions_per_second": 0.001})
    _submit_unkeyed(quoted.client)
    tokens = float(quoted.redis.hget(submit_bucket_key(quoted.principal), "tokens") or 0)
    with pytest.raises(ResourceExhausted, match="quota queued_jobs"):
        _submit_unkeyed(quoted.client)
    assert float(quoted.redis.hget(submit_bucket_key(quoted.principal), "tokens") or 0) == tokens


def test_admission_works_the_same_through_redis_py(redis_client: Redis) -> None:
    """Where the lean connection does not apply (a TLS Redis), the admission script goes through
    redis-py, keyed or not, and loads itself again after a SCRIPT FLUSH."""
    lean = LeanPool(redis_client)
    lean.supported = False
    sessions = SessionStore(redis_client, 1000, lean=lean)
    store = JobStore(
        redis_client, sessions, queue=f"quota-py-{uuid.uuid4().hex[:8]}", policy=LimitPolicy(),
        max_source_bytes=1024, queue_ttl_seconds=600, result_ttl_seconds=600, lean=lean,
        admission=Admission(redis_client, max_queued_jobs=1, max_rate=100.0, max_burst=100),
    )  # fmt: skip
    caller = Caller(principal=f"q-{uuid.uuid4().hex[:12]}")
    redis_client.script_flush()
    first = store.submit(caller, jobs_pb2.SubmitJobRequest(language=Language.LUA.to_proto(), source="return 1"))
    keyed = jobs_pb2.SubmitJobRequest(language=Language.LUA.to_proto(), source="return 1", idempotency_key="k")
    for request in (jobs_pb2.SubmitJobRequest(language=Language.LUA.to_proto(), source="return 1"), keyed):
        with pytest.raises(ResourceExhausted, match=r"quota queued_jobs .*: 1 jobs in use, limit 1 "):
            store.submit(caller, request)
    store.cancel(caller, first.id)
    second = store.submit(caller, keyed)
    assert store.submit(caller, keyed).id == second.id  # the key answers with its job
    assert redis_client.zrange(queued_jobs_key(caller.principal), 0, -1) == [second.id.encode()]


def test_concurrent_submissions_stop_at_exactly_the_queued_jobs_limit(quoted: Quoted) -> None:
    """Admission and writes are one script: racing submitters cannot pass the limit together."""
    quoted.quotas.set(quoted.principal, {"queued_jobs": 10})
    outcomes: list[str] = []

    def submitter() -> None:
        for _ in range(5):
            try:
                _submit_unkeyed(quoted.client)
                outcomes.append("queued")
            except ResourceExhausted:
                outcomes.append("refused")

    threads = [threading.Thread(target=submitter) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("queued") == 10 and outcomes.count("refused") == 30
    assert quoted.queued() == 10 and quoted.rq_count() == 10
