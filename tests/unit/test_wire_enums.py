"""Languages and outcomes map to and from their protobuf wire values, both ways, for every value
the .proto defines; unspecified and unknown values get the documented answer."""

from __future__ import annotations

import pytest

from scriptpool.errors import InvalidArgument
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2


def test_every_language_round_trips_and_the_proto_names_no_other() -> None:
    for language in Language:
        assert Language.from_proto(language.to_proto()) is language
        assert jobs_pb2.Language.Name(language.to_proto()) == "LANGUAGE_" + language.name
    named = {jobs_pb2.Language.Value(name) for name in jobs_pb2.Language.keys()} - {jobs_pb2.LANGUAGE_UNSPECIFIED}
    assert {language.to_proto() for language in Language} == named


@pytest.mark.parametrize("value", [jobs_pb2.LANGUAGE_UNSPECIFIED, 99, -1])
def test_an_unspecified_or_unknown_language_is_an_invalid_argument(value: int) -> None:
    with pytest.raises(InvalidArgument, match="must be one of lua, javascript, python"):
        Language.from_proto(value)


def test_every_outcome_round_trips_and_the_proto_names_no_other() -> None:
    for outcome in Outcome:
        assert Outcome.from_proto(outcome.to_proto()) is outcome
        assert jobs_pb2.Outcome.Name(outcome.to_proto()) == "OUTCOME_" + outcome.name
    named = {jobs_pb2.Outcome.Value(name) for name in jobs_pb2.Outcome.keys()} - {jobs_pb2.OUTCOME_UNSPECIFIED}
    assert {outcome.to_proto() for outcome in Outcome} == named


def test_an_unspecified_outcome_is_an_internal_error_and_an_unknown_one_raises() -> None:
    assert Outcome.from_proto(jobs_pb2.OUTCOME_UNSPECIFIED) is Outcome.INTERNAL_ERROR
    with pytest.raises(ValueError):
        Outcome.from_proto(99)
