"""Times as scripts see them: ISO-8601 strings in UTC, and seconds beside them."""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scriptpool.core.script_times import iso_utc, parse_time, with_times


def test_an_iso_string_in_utc_with_microseconds() -> None:
    assert iso_utc(0.25) == "1970-01-01T00:00:00.250000+00:00"
    assert iso_utc(1_764_936_000.5) == "2025-12-05T12:00:00.500000+00:00"


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_parsing_the_string_gives_the_seconds_back(seconds: float) -> None:
    assert math.isclose(parse_time(iso_utc(seconds), "t"), seconds, abs_tol=1e-6)


def test_numbers_naive_and_zoned_strings_are_accepted() -> None:
    assert parse_time(12, "t") == 12.0
    assert parse_time("1970-01-01T00:00:12", "t") == 12.0
    assert parse_time("1970-01-01T01:00:12+01:00", "t") == 12.0
    assert parse_time("1970-01-01T00:00:12Z", "t") == 12.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, None, "yesterday", "", [1], {"a": 1}])
def test_anything_else_is_refused_naming_the_argument(bad: object) -> None:
    with pytest.raises(ValueError, match="created_after"):
        parse_time(bad, "created_after")  # type: ignore[arg-type]


def test_iso_utc_refuses_a_non_finite_time() -> None:
    with pytest.raises(ValueError):
        iso_utc(math.inf)


def test_with_times_puts_both_forms_and_none_for_unset() -> None:
    plain = with_times({"id": "x"}, created_at=1.5, updated_at=0.0)
    assert plain == {
        "id": "x",
        "created_at": "1970-01-01T00:00:01.500000+00:00",
        "created_at_unix": 1.5,
        "updated_at": None,
        "updated_at_unix": None,
    }
    assert datetime.datetime.fromisoformat(str(plain["created_at"])).tzinfo is not None
