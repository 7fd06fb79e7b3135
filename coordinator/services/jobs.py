"""JobService: submit (one job or a batch), inspect, wait for and cancel jobs.

Waits (`wait_seconds`, `timeout_seconds`) are checked finite and in range before any handler runs
(`scriptpool.coordinator.request_checks`); every wait also ends when its call does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc

from scriptpool.coordinator.auth import Authenticator, Caller
from scriptpool.coordinator.services.wait_budget import wait_budget
from scriptpool.coordinator.services.waiting_calls import WaitingCalls
from scriptpool.coordinator.status import grpc_service
from scriptpool.coordinator.stores.jobs import JobStore
from scriptpool.coordinator.waiters import CALL_RECHECK_SECONDS, GATHER_SECONDS, FinishedIds, JobWaiters
from scriptpool.v1 import jobs_pb2, jobs_pb2_grpc


@grpc_service(jobs_pb2.DESCRIPTOR.services_by_name["JobService"])
class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(
        self, auth: Authenticator, jobs: JobStore, waiters: JobWaiters, max_wait_seconds: float, waiting: WaitingCalls
    ) -> None:
        self.auth = auth
        self.waiting = waiting
        self.jobs = jobs
        self.waiters = waiters
        self.max_wait_seconds = max_wait_seconds

    def SubmitJob(
        self, request: jobs_pb2.SubmitJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.SubmitJobResponse:
        caller = self.auth.caller(context)
        if not request.wait_seconds:
            return jobs_pb2.SubmitJobResponse(job=self.jobs.submit(caller, request))
        give_up = time.monotonic() + self._wait_budget(request.wait_seconds, context)
        job_id = str(uuid.uuid4())
        # A wait past the budget is refused before the job is queued; the watch starts before the job
        # exists, so its end cannot be missed.
        with self.waiting.hold(caller), self.waiters.watch_many([job_id]) as ended:
            queued = self.jobs.submit(caller, request, job_id=job_id)
            if queued.id != job_id:  # an earlier request with this idempotency key queued it
                with self.waiters.watch_many([queued.id]) as earlier_ended:
                    job = self._seen(self.jobs.get(caller, queued.id))  # (read once watched: no end missed)
                    job, finished = self._until_finished(caller, job, earlier_ended, give_up, context)
            else:
                job, finished = self._until_finished(caller, queued, ended, give_up, context)
        return jobs_pb2.SubmitJobResponse(job=job, finished=finished)

    def SubmitJobs(
        self, request: jobs_pb2.SubmitJobsRequest, context: grpc.ServicerContext
    ) -> Iterator[jobs_pb2.SubmitJobsResponse]:
        caller = self.auth.caller(context)
        batch = self.jobs.check_batch(caller, request)  # all checks before any write
        if not request.wait_seconds:
            for index, job in enumerate(self.jobs.write(batch)):
                yield jobs_pb2.SubmitJobsResponse(index=index, job=job)
            return
        give_up = time.monotonic() + self._wait_budget(request.wait_seconds, context)
        # (refused past the wait budget before any is written; watched before they exist: no end is missed)
        with self.waiting.hold(caller), self.waiters.watch_many(batch.job_ids) as finished:
            jobs = self.jobs.write(batch)
            if jobs[0].id != batch.job_ids[0]:  # an earlier request with this idempotency key queued them
                with self.waiters.watch_many([job.id for job in jobs]) as earlier_finished:
                    earlier_finished.recheck_due = True  # read them all first: some may have finished
                    context.add_callback(earlier_finished.interrupt)
                    yield from self._as_they_finish(jobs, earlier_finished, give_up, context)
                return
            context.add_callback(finished.interrupt)  # a cancelled call stops waiting at once
            yield from self._as_they_finish(jobs, finished, give_up, context)

    def _as_they_finish(
        self, jobs: list[jobs_pb2.Job], finished: FinishedIds, give_up: float, context: grpc.ServicerContext
    ) -> Iterator[jobs_pb2.SubmitJobsResponse]:
        """Answer each job once it has finished, reading the records of all the ids that arrived
        together in one round trip, and every job still pending when messages may have been lost
        (`finished.recheck_due`) and each `CALL_RECHECK_SECONDS`; at `give_up` (monotonic) the rest
        follow unfinished, as they are then."""
        pending = {job.id: (index, job) for index, job in enumerate(jobs)}
        recheck_at = time.monotonic() + CALL_RECHECK_SECONDS
        while pending and context.is_active():
            now = time.monotonic()
            if now >= give_up:
                break
            if now >= recheck_at or finished.recheck_due:
                finished.recheck_due = False
                recheck_at = now + CALL_RECHECK_SECONDS
                ids = list(pending)
            else:
                gather = GATHER_SECONDS if len(pending) > 1 else 0.0
                ids = [job_id for job_id in finished.take(min(give_up, recheck_at) - now, gather) if job_id in pending]
                if not ids:
                    continue
            for job in self.jobs.refresh([pending[job_id][1] for job_id in ids]):
                index, _ = pending.pop(job.id)
                yield jobs_pb2.SubmitJobsResponse(index=index, job=self._seen(job), finished=True)
        if pending and context.is_active():
            rest = sorted(pending.values(), key=lambda entry: entry[0])
            self.jobs.refresh([job for _, job in rest])  # (any that finished just now go out finished)
            for index, job in rest:
                done = job.status == jobs_pb2.JOB_STATUS_FINISHED
                yield jobs_pb2.SubmitJobsResponse(index=index, job=self._seen(job), finished=done)

    def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return self._seen(self.jobs.get(self.auth.caller(context), request.job_id))

    def _seen(self, job: jobs_pb2.Job) -> jobs_pb2.Job:
        """Whoever learns that a job finished learns it after its credential stopped working here."""
        if job.status == jobs_pb2.JOB_STATUS_FINISHED:
            self.auth.job_credentials.forget_job(job.id)
        return job

    def WaitJob(self, request: jobs_pb2.WaitJobRequest, context: grpc.ServicerContext) -> jobs_pb2.WaitJobResponse:
        caller = self.auth.caller(context)
        give_up = time.monotonic() + self._wait_budget(request.timeout_seconds or self.max_wait_seconds, context)
        with self.waiting.hold(caller), self.waiters.watch_many([request.job_id]) as ended:
            job = self._seen(self.jobs.get(caller, request.job_id))  # also the access check
            job, finished = self._until_finished(caller, job, ended, give_up, context)
        return jobs_pb2.WaitJobResponse(job=job, finished=finished)

    def _wait_budget(self, asked_seconds: float, context: grpc.ServicerContext) -> float:
        return wait_budget(asked_seconds, self.max_wait_seconds, context)

    def _until_finished(
        self, caller: Caller, job: jobs_pb2.Job, ended: FinishedIds, give_up: float, context: grpc.ServicerContext
    ) -> tuple[jobs_pb2.Job, bool]:
        """Re-read the job each time its end may have come (`ended` has news, or every
        `CALL_RECHECK_SECONDS`), until it has finished, `give_up` (monotonic) has passed or the call has
        ended (cancelled, or past its deadline: its thread is freed at once). Returns the job as last
        read and whether it finished."""
        context.add_callback(ended.interrupt)
        while job.status != jobs_pb2.JOB_STATUS_FINISHED:
            left = give_up - time.monotonic()
            if left <= 0 or not context.is_active():
                return job, False
            ended.take(min(left, CALL_RECHECK_SECONDS))  # (any news, a recheck included, means: read it again)
            job = self._seen(self.jobs.get(caller, job.id))
        return job, True

    def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return self.jobs.cancel(self.auth.caller(context), request.job_id)

    def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.ListJobsResponse:
        return self.jobs.list_for_session(self.auth.caller(context), request)
