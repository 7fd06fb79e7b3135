"""Session replay: re-run a session's recorded jobs, in order, in a new replay session.

The replay session has the original as parent and the tag `replay`. Jobs are re-submitted with
their recorded source, inputs and limits; `speed` scales the recorded gaps between job starts
(0 = no waiting). Progress and the result (`jobs_replayed`, `matched`, `diverged`,
`first_divergence`) are written to the replay session's metadata and timeline. The original
session, its artifacts and state are never touched.

Each replayed job gets the random seed and the start time recorded with the original: Lua
`math.random`/`os.time`/`os.date`, JS `Math.random`/`Date`, Python `random`/`datetime` replay
identically (the clock then advances in real time from the recorded start).

Bounds (docs/adr/0004-bounded-replay.md): a replay re-runs at most `max_replay_jobs` jobs; a job's
script may start at most `max_replays_per_job` replays, whose jobs get no more than its own limits
and cannot replay in turn; a principal runs at most `max_running_replays_per_principal` at once; all
replays are driven by one thread (`scriptpool.coordinator.replay_runner`).
"""

from __future__ import annotations

from redis import Redis

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.replay_runner import RecordedJob, ReplayRun, ReplayRunner
from scriptpool.coordinator.stores import lua
from scriptpool.coordinator.stores.jobs import REPLAYED_FIELD, REPLAYS_FIELD, JobStore
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.core.job_records import hash_fields, texts
from scriptpool.core.keys import job_key, replays_key, session_jobs_key, timeline_key
from scriptpool.errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted
from scriptpool.v1 import jobs_pb2, sandbox_pb2, sessions_pb2
from scriptpool.values import to_value_map

MAX_LISTED_REPLAYS = 1000
"""Replay ids a session remembers (`getReplayMetadata().replays`): the latest ones."""

_CLAIM = lua.script("replay_claim", REPLAYED_FIELD=REPLAYED_FIELD, REPLAYS_FIELD=REPLAYS_FIELD)


MaybeFinishedJob = tuple[float, sandbox_pb2.ChildJob, jobs_pb2.JobResult | None]
"""A recorded job as `recorded_jobs` reads it: its result is None while it has not finished."""


class ReplayStore:
    def __init__(
        self, sessions: SessionStore, jobs: JobStore, runner: ReplayRunner, *, max_jobs: int, max_per_job: int
    ) -> None:
        self.sessions = sessions
        self.jobs = jobs
        self.runner = runner
        self.redis: Redis = sessions.redis
        self.max_jobs = max_jobs
        self.max_per_job = max_per_job
        self._claim = self.redis.register_script(_CLAIM)

    def recorded_jobs(self, session_id: str, most: int) -> list[MaybeFinishedJob]:
        """The session's first `most` recorded jobs (read in one round trip), oldest first."""
        ids = texts(self.redis.zrange(session_jobs_key(session_id), 0, most - 1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(job_key(job_id))
        found = []
        for raw in pipe.execute():
            if not raw:
                continue
            fields = hash_fields(raw)
            result = jobs_pb2.JobResult.FromString(fields["result"]) if "result" in fields else None
            spec = sandbox_pb2.ChildJob.FromString(fields["spec"])
            # the clock the replayed script sees starts where the recorded job started, and its
            # reads give back the recorded job's first (sandbox/script_clock.py)
            spec.clock_start = float(fields.get("started_at", b"0")) or float(fields["created_at"])
            if result is not None:
                spec.clock_replay.extend(result.clock_reads)
            found.append((float(fields["created_at"]), spec, result))
        return found

    def _replayable(self, session_id: str) -> bool:
        """Whether one of the session's first `max_jobs` recorded jobs finished: HEXISTS of their
        results, never the records themselves (sources and results)."""
        ids = texts(self.redis.zrange(session_jobs_key(session_id), 0, self.max_jobs - 1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hexists(job_key(job_id), "result")
        return any(pipe.execute()) if ids else False

    def can_replay(self, caller: Caller, session_id: str) -> bool:
        self.sessions.get(caller, session_id, "Session.canReplay")
        return self._replayable(session_id)

    def metadata(self, caller: Caller, session_id: str) -> sessions_pb2.ReplayMetadata:
        self.sessions.get(caller, session_id, "Session.getReplayMetadata")
        replayable = self._replayable(session_id)
        key = timeline_key(session_id)
        first = self.redis.xrange(key, count=1)
        last = self.redis.xrevrange(key, count=1)
        first_ts = float(hash_fields(first[0][1])["ts"]) if first else 0.0
        last_ts = float(hash_fields(last[0][1])["ts"]) if last else 0.0
        return sessions_pb2.ReplayMetadata(
            replayable=replayable,
            job_count=int(self.redis.zcard(session_jobs_key(session_id))),
            event_count=int(self.redis.xlen(key)),
            first_event=first_ts,
            last_event=last_ts,
            duration=max(0.0, last_ts - first_ts),
            replays=texts(self.redis.lrange(replays_key(session_id), 0, -1)),
        )

    def start(self, caller: Caller, session_id: str, speed: float) -> str:
        if speed < 0:
            raise InvalidArgument("speed must be 0 (no waiting) or positive")
        original = self.sessions.get(caller, session_id, "Session.replay")
        recorded = int(self.redis.zcard(session_jobs_key(session_id)))
        if recorded > self.max_jobs:
            raise ResourceExhausted(
                f"session {session_id} has {recorded} recorded jobs; a replay re-runs at most {self.max_jobs}"
            )
        jobs: list[RecordedJob] = [
            (started, spec, result)
            for started, spec, result in self.recorded_jobs(session_id, self.max_jobs)
            if result is not None
        ]
        if not jobs:
            raise FailedPrecondition(f"session {session_id} has no finished jobs to replay")
        cap = self._claim_for_job(caller) if caller.is_job else None
        owner = Caller(principal=caller.principal)
        self.runner.reserve(caller.principal)
        try:
            replay = self.sessions.create(
                owner,
                sessions_pb2.CreateSessionRequest(
                    name=f"replay of {original.name or session_id}"[:255],
                    tags=["replay"],
                    parent_session_id=session_id,
                    metadata=to_value_map({"replay_of": session_id, "status": "running", "speed": speed}),
                ),
            )
            pipe = self.redis.pipeline(transaction=False)
            pipe.rpush(replays_key(session_id), replay.id)
            pipe.ltrim(replays_key(session_id), -MAX_LISTED_REPLAYS, -1)
            pipe.execute()
        except BaseException:
            self.runner.release(caller.principal)
            raise
        self.runner.start(ReplayRun(owner=owner, replay_id=replay.id, jobs=jobs, speed=speed, cap=cap))
        return replay.id

    def _claim_for_job(self, caller: Caller) -> jobs_pb2.JobLimits:
        """Count a replay against the calling job (refused for a replayed job and past the job's
        maximum); returns the job's limits, which no replayed job may exceed."""
        verdict, *rest = self._claim(keys=[job_key(caller.job_id)], args=[self.max_per_job])
        if verdict == b"replayed":
            raise PermissionDenied(
                "Session.replay: this job was submitted by a replay, and a replayed job cannot start a replay"
            )
        if verdict == b"exhausted":
            raise ResourceExhausted(
                f"Session.replay: this job already started {int(rest[0])} replays, the most one job may "
                f"({self.max_per_job}); replay from a client (`scriptpool replay SESSION`) for more"
            )
        return sandbox_pb2.ChildJob.FromString(rest[0]).limits
