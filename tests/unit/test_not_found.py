"""The one answer for an id the caller may not see (coordinator/stores/not_found.py, ADR 0017)."""

from __future__ import annotations

import logging
import uuid

import pytest

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores import not_found
from scriptpool.core.repeated_log import RepeatedProblem


def test_each_answer_is_not_found_and_names_only_the_ids_it_was_given() -> None:
    session, artifact, job, subscription = (str(uuid.uuid4()) for _ in range(4))
    answers = {
        not_found.session_not_found(session): f"session {session} not found",
        not_found.artifact_not_found(session, artifact): f"artifact {artifact} not found in session {session}",
        not_found.job_not_found(job): f"job {job} not found (unknown, or its record expired)",
        not_found.subscription_not_found(subscription): (
            f"subscription {subscription} not found (it may have expired: an hour unused)"
        ),
        not_found.hook_not_found("h" * 100): f"hook {'h' * 60!r} not found",
    }
    for error, message in answers.items():
        assert (error.code, error.message) == ("NOT_FOUND", message)


def test_a_refusal_of_an_object_that_exists_is_logged_for_the_operator(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = RepeatedProblem(not_found.log, "another principal's object answered NOT_FOUND", clock=lambda: 0.0)
    monkeypatch.setattr(not_found, "REFUSALS_LOG", fresh)
    with caplog.at_level(logging.WARNING, logger=not_found.log.name):
        not_found.refused(Caller(principal="bob", job_id="j-1", session_id="s"), "artifact", "a-1", "alice")
        not_found.refused(Caller(principal="bob"), "session", "s-2", "alice")  # within 30 s: counted, not logged
    assert [r.getMessage() for r in caplog.records] == [
        "another principal's object answered NOT_FOUND: job j-1 of 'bob' asked for artifact a-1 of 'alice'"
    ]
