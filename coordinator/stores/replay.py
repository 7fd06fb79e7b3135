"""Session replay: re-run a session's recorded jobs, in order, in a new replay session.

The replay session has the original as parent and the tag `replay`. Jobs are re-submitted with
their recorded source, inputs and limits; `speed` scales the recorded gaps between job starts
(0 = no waiting). Progress and the result (`jobs_replayed`, `matched`, `diverged`,
`first_divergence`) are written to the replay session's metadata and timeline. The original
session, its artifacts and state are never touched.

Each replayed job gets the random seed and the start time recorded with the original: Lua
`math.random`/`os.time`/`os.date`, JS `Math.random`/`Date`, Python `random`/`datetime` replay
identically (the clock then advances in real time from the recorded start).
"""

from __future__ import annotations

import logging
import threading
import time

from scriptpool.errors import FailedPrecondition, InvalidArgument
from scriptpool.v1 import common_pb2, jobs_pb2, sandbox_pb2, sessions_pb2
from scriptpool.values import PlainValue, to_value_map

from coordinator.auth import Caller
from coordinator.stores import timeline
from coordinator.stores.jobs import JobStore
from coordinator.stores.sessions import SessionStore
from workers.job_records import hash_fields, job_key, session_jobs_key, texts

log = logging.getLogger(__name__)
RecordedJob = tuple[float, sandbox_pb2.ChildJob, jobs_pb2.JobResult | None]
"""(created_at, spec with the recorded seed and start time, recorded result)"""
MAX_GAP_SECONDS = 60.0


def replays_key(session_id: str) -> str:
    return f"sp:session:{session_id}:replays"


class ReplayStore:
    def __init__(self, sessions: SessionStore, jobs: JobStore) -> None:
        self.sessions = sessions
        self.jobs = jobs
        self.redis = sessions.redis

    def recorded_jobs(self, session_id: str) -> list[RecordedJob]:
        ids = texts(self.redis.zrange(session_jobs_key(session_id), 0, -1))
        found = []
        for job_id in ids:
            raw = self.redis.hgetall(job_key(job_id))
            if not raw:
                continue
            fields = hash_fields(raw)
            result = jobs_pb2.JobResult.FromString(fields["result"]) if "result" in fields else None
            spec = sandbox_pb2.ChildJob.FromString(fields["spec"])
            # the clock the replayed script sees starts where the recorded job started
            spec.clock_start = float(fields.get("started_at", b"0")) or float(fields["created_at"])
            found.append((float(fields["created_at"]), spec, result))
        return found

    def can_replay(self, caller: Caller, session_id: str) -> bool:
        self.sessions.get(caller, session_id)
        return any(result is not None for _, _, result in self.recorded_jobs(session_id))

    def metadata(self, caller: Caller, session_id: str) -> sessions_pb2.ReplayMetadata:
        self.sessions.get(caller, session_id)
        jobs = self.recorded_jobs(session_id)
        key = timeline.timeline_key(session_id)
        first = self.redis.xrange(key, count=1)
        last = self.redis.xrevrange(key, count=1)
        first_ts = float(hash_fields(first[0][1])["ts"]) if first else 0.0
        last_ts = float(hash_fields(last[0][1])["ts"]) if last else 0.0
        return sessions_pb2.ReplayMetadata(
            replayable=any(r is not None for _, _, r in jobs),
            job_count=len(jobs),
            event_count=int(self.redis.xlen(key)),
            first_event=first_ts,
            last_event=last_ts,
            duration=max(0.0, last_ts - first_ts),
            replays=texts(self.redis.lrange(replays_key(session_id), 0, -1)),
        )

    def start(self, caller: Caller, session_id: str, speed: float) -> str:
        if speed < 0:
            raise InvalidArgument("speed must be 0 (no waiting) or positive")
        original = self.sessions.get(caller, session_id)
        jobs = [(t, spec, r) for t, spec, r in self.recorded_jobs(session_id) if r is not None]
        if not jobs:
            raise FailedPrecondition(f"session {session_id} has no finished jobs to replay")
        owner = Caller(principal=caller.principal)
        replay = self.sessions.create(
            owner,
            sessions_pb2.CreateSessionRequest(
                name=f"replay of {original.name or session_id}"[:255],
                tags=["replay"],
                parent_session_id=session_id,
                metadata=to_value_map({"replay_of": session_id, "status": "running", "speed": speed}),
            ),
        )
        self.redis.rpush(replays_key(session_id), replay.id)
        thread = threading.Thread(
            target=self._run, args=(owner, replay.id, jobs, speed), name=f"replay-{replay.id[:8]}", daemon=True
        )
        thread.start()
        return replay.id

    def _run(
        self,
        owner: Caller,
        replay_id: str,
        jobs: list[RecordedJob],
        speed: float,
    ) -> None:
        matched = diverged = 0
        first_divergence: dict[str, PlainValue] | None = None
        previous = jobs[0][0]
        try:
            for index, (started, spec, recorded) in enumerate(jobs, start=1):
                if speed > 0:
                    time.sleep(min((started - previous) * speed, MAX_GAP_SECONDS))
                previous = started
                request = jobs_pb2.SubmitJobRequest(
                    language=spec.language, source=spec.source, session_id=replay_id, limits=spec.limits,
                    inputs=spec.inputs,
                )  # fmt: skip
                job = self.jobs.submit(owner, request, random_seed=spec.random_seed, clock_start=spec.clock_start)
                while not self.jobs.is_finished(job.id):
                    time.sleep(0.02)
                result = self.jobs.get(owner, job.id).result
                assert recorded is not None
                same = result.outcome == recorded.outcome and result.result.SerializeToString(
                    deterministic=True
                ) == recorded.result.SerializeToString(deterministic=True)
                if same:
                    matched += 1
                else:
                    diverged += 1
                    if first_divergence is None:
                        first_divergence = {
                            "job_index": index,
                            "recorded_outcome": jobs_pb2.Outcome.Name(recorded.outcome),
                            "replayed_outcome": jobs_pb2.Outcome.Name(result.outcome),
                            "replayed_job_id": job.id,
                        }
                progress = index / len(jobs)
                timeline.append(self.redis, replay_id, "replay.progress", f"{progress:.0%}", job_id=job.id,
                                data={"progress": progress, "matched": same})  # fmt: skip
            status = "finished"
        except Exception:
            log.exception("replay %s failed", replay_id)
            status = "failed"
        summary: dict[str, PlainValue] = {
            "status": status,
            "jobs_replayed": matched + diverged,
            "matched": matched,
            "diverged": diverged,
            "first_divergence": first_divergence,
        }
        updates = common_pb2.ValueMap()
        updates.CopyFrom(to_value_map(summary))
        self.sessions.update_metadata(owner, replay_id, updates)
        timeline.append(self.redis, replay_id, "replay.finished", status, data=summary)
