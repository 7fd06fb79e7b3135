"""JobService: submit, inspect, wait for and cancel jobs."""

from __future__ import annotations

import time

import grpc
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import jobs_pb2, jobs_pb2_grpc

from coordinator.auth import Authenticator
from coordinator.status import grpc_service
from coordinator.stores.jobs import JobStore
from coordinator.waiters import JobWaiters


@grpc_service(jobs_pb2.DESCRIPTOR.services_by_name["JobService"])
class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, auth: Authenticator, jobs: JobStore, waiters: JobWaiters, max_wait_seconds: float) -> None:
        self.auth = auth
        self.jobs = jobs
        self.waiters = waiters
        self.max_wait_seconds = max_wait_seconds

    def SubmitJob(
        self, request: jobs_pb2.SubmitJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.SubmitJobResponse:
        return jobs_pb2.SubmitJobResponse(job=self.jobs.submit(self.auth.caller(context), request))

    def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return self._seen(self.jobs.get(self.auth.caller(context), request.job_id))

    def _seen(self, job: jobs_pb2.Job) -> jobs_pb2.Job:
        """Whoever learns that a job finished learns it after its credential stopped working here."""
        if job.status == jobs_pb2.JOB_STATUS_FINISHED:
            self.auth.job_credentials.forget_job(job.id)
        return job

    def WaitJob(self, request: jobs_pb2.WaitJobRequest, context: grpc.ServicerContext) -> jobs_pb2.WaitJobResponse:
        caller = self.auth.caller(context)
        if request.timeout_seconds < 0:
            raise InvalidArgument("timeout_seconds must not be negative")
        timeout = min(request.timeout_seconds or self.max_wait_seconds, self.max_wait_seconds)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(0.0, remaining - 0.05))
        give_up = time.monotonic() + timeout
        with self.waiters.watch(request.job_id) as wait:
            job = self._seen(self.jobs.get(caller, request.job_id))  # also the access check
            while job.status != jobs_pb2.JOB_STATUS_FINISHED:
                left = give_up - time.monotonic()
                if left <= 0:
                    return jobs_pb2.WaitJobResponse(job=job, finished=False)
                wait(left)
                job = self._seen(self.jobs.get(caller, request.job_id))
        return jobs_pb2.WaitJobResponse(job=job, finished=True)

    def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return self.jobs.cancel(self.auth.caller(context), request.job_id)

    def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.ListJobsResponse:
        return self.jobs.list_for_session(self.auth.caller(context), request)
