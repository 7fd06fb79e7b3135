"""The one answer for an id the caller may not see (ADR 0017: no existence oracle).

Another principal's session, artifact, job, event subscription or hook registration is answered
exactly like one that does not exist: NOT_FOUND, with the message built here from the id the
caller sent, so the answer tells nothing the caller did not already know. Every store and service
builds these refusals here and nowhere else, so the two answers cannot drift apart.

A refusal of an object that does exist (the store saw its owner) is still recorded, for the
operator only: `refused` logs it (the first at once, then one line per 30 s with a count, so a
caller probing ids cannot flood the log). Nothing of it reaches the caller, nor the owner's
artifact audit log (a stranger must not be able to fill it; a grantee's refusal is audited there).
"""

from __future__ import annotations

import logging

from scriptpool.coordinator.auth import Caller
from scriptpool.core.repeated_log import RepeatedProblem
from scriptpool.errors import NotFound

log = logging.getLogger(__name__)
REFUSALS_LOG = RepeatedProblem(log, "another principal's object answered NOT_FOUND")
"""Refusals of objects that exist but belong to someone else: logged once, then counted."""


def refused(caller: Caller, kind: str, object_id: str, owner: str) -> None:
    """Record (operator log only) that `caller` was refused `owner`'s `kind` `object_id`."""
    by = f"job {caller.job_id} of {caller.principal!r}" if caller.is_job else repr(caller.principal)
    REFUSALS_LOG.happened(f"{by} asked for {kind} {object_id} of {owner!r}")


def session_not_found(session_id: str) -> NotFound:
    return NotFound(f"session {session_id} not found")


def artifact_not_found(session_id: str, artifact_id: str) -> NotFound:
    return NotFound(f"artifact {artifact_id} not found in session {session_id}")


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"job {job_id} not found (unknown, or its record expired)")


def subscription_not_found(subscription_id: str) -> NotFound:
    return NotFound(f"subscription {subscription_id} not found (it may have expired: an hour unused)")


def hook_not_found(hook_id: str) -> NotFound:
    return NotFound(f"hook {hook_id[:60]!r} not found")
