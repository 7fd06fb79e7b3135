"""`proto/scriptpool/core/rq_dates.py` gives exactly what RQ's own date helpers give, errors included."""

from __future__ import annotations

import datetime

import pytest
import rq.job
from hypothesis import given
from hypothesis import strategies as st

from scriptpool.core import rq_dates, rq_internals

UTC = datetime.UTC


@given(st.datetimes(timezones=st.just(UTC)))
def test_formatting_matches_rqs(moment: datetime.datetime) -> None:
    assert rq_dates.utcformat(moment) == rq_internals.RQ_UTCFORMAT(moment)


@given(st.datetimes(min_value=datetime.datetime(1000, 1, 1), timezones=st.just(UTC)))
def test_parsing_what_rq_wrote_matches_rqs(moment: datetime.datetime) -> None:
    written = rq_internals.RQ_UTCFORMAT(moment)
    for value in (written, written.encode()):
        ours, theirs = rq_dates.str_to_date(value), rq_internals.RQ_STR_TO_DATE(value)
        assert ours == theirs and ours.tzinfo == theirs.tzinfo == UTC


@pytest.mark.parametrize(
    "value", ["2026-11-24T23:59:59Z", "2026-11-24T23:59:59.5Z", "2026-02-30T00:00:00.000000Z", "nonsense", ""]
)
def test_other_inputs_get_rqs_own_answer_or_error(value: str) -> None:
    try:
        expected: object = rq_internals.RQ_STR_TO_DATE(value)
    except ValueError as exc:
        with pytest.raises(ValueError):
            rq_dates.str_to_date(value)
        assert str(exc)
    else:
        assert rq_dates.str_to_date(value) == expected


def test_install_points_rqs_job_at_them() -> None:
    names = ("str_to_date", "utcformat")
    before = {name: getattr(rq.job, name) for name in names}
    try:
        rq_dates.install()
        assert [getattr(rq.job, name) for name in names] == [rq_dates.str_to_date, rq_dates.utcformat]
    finally:
        rq_internals.install_date_helpers(before["str_to_date"], before["utcformat"])
