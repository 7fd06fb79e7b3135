"""`first_divergence` says what differed between a recorded job and its replay."""

from __future__ import annotations

import hashlib

from scriptpool.coordinator.replay_runner import SHOWN_RESULT_BYTES, divergence
from scriptpool.v1 import jobs_pb2
from scriptpool.values import PlainValue, to_value

OK, ERROR = jobs_pb2.OUTCOME_OK, jobs_pb2.OUTCOME_SCRIPT_ERROR


def _result(value: PlainValue, outcome: jobs_pb2.Outcome.ValueType = OK, message: str = "") -> jobs_pb2.JobResult:
    result = jobs_pb2.JobResult(outcome=outcome, message=message)
    if outcome == OK:
        result.result.CopyFrom(to_value(value))
    return result


def test_the_same_outcome_and_value_match() -> None:
    assert divergence(_result({"a": [1, 2.5]}), _result({"a": [1, 2.5]})) is None


def test_an_outcome_difference_names_both_outcomes_and_messages() -> None:
    found = divergence(_result(1), _result(None, ERROR, "script error: boom"))
    assert found == {
        "differs_in": "outcome",
        "recorded_outcome": "OUTCOME_OK",
        "replayed_outcome": "OUTCOME_SCRIPT_ERROR",
        "recorded_message": "",
        "replayed_message": "script error: boom",
    }


def test_a_small_value_difference_shows_both_values() -> None:
    found = divergence(_result([1, "a"]), _result([1, "b"]))
    assert found is not None and found["differs_in"] == "result"
    assert (found["recorded_result"], found["replayed_result"]) == ([1, "a"], [1, "b"])


def test_a_large_value_difference_shows_digests() -> None:
    recorded, replayed = _result("x" * 1000), _result("y" * 1000)
    found = divergence(recorded, replayed)
    assert found is not None and found["differs_in"] == "result"
    data = recorded.result.SerializeToString(deterministic=True)
    assert len(data) > SHOWN_RESULT_BYTES
    assert found["recorded_result"] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert found["replayed_result"] != found["recorded_result"]


def test_long_messages_are_cut() -> None:
    found = divergence(_result(None, ERROR, "m" * 5000), _result(1))
    assert found is not None and found["recorded_message"] == "m" * SHOWN_RESULT_BYTES
