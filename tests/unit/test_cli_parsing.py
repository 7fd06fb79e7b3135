"""The CLI's parsing module (global flags anywhere, numeric flag types), `status`'s reading of RQ
failure texts, and the progress helper's off switch."""

from __future__ import annotations

import argparse

import pytest

from scriptpool.coordinator.cli import progress
from scriptpool.coordinator.cli.main import build_parser
from scriptpool.coordinator.cli.parsing import (
    GLOBAL_FLAGS,
    GlobalFlag,
    UsageError,
    non_negative_float,
    non_negative_int,
    parse,
    positive_float,
    positive_int,
    split_global_flags,
)
from scriptpool.coordinator.cli.status_cmd import failure_kind


@pytest.mark.parametrize(
    "words",
    [
        ["--coordinator", "h:1", "--api-key", "k", "-v", "--json", "job", "get", "ID"],
        ["job", "get", "ID", "--coordinator", "h:1", "--api-key", "k", "-v", "--json"],
        ["--json", "job", "--coordinator=h:1", "get", "--verbose", "ID", "--api-key=k"],
    ],
)
def test_global_flags_mean_the_same_in_any_position(words: list[str]) -> None:
    args = parse(build_parser(), words)
    assert (args.command, args.job_command, args.job_id) == ("job", "get", "ID")
    assert (args.coordinator, args.api_key, args.verbose, args.json) == ("h:1", "k", True, True)


def test_absent_global_flags_keep_the_subcommands_defaults() -> None:
    args = parse(build_parser(), ["job", "get", "ID"])
    assert (args.coordinator, args.api_key, args.verbose, args.json) == (None, None, False, False)


def test_words_after_double_dash_are_left_alone() -> None:
    rest, found = split_global_flags(["state", "--", "--json"])
    assert rest == ["state", "--", "--json"] and found == {}


@pytest.mark.parametrize(("words", "message"), [(["--api-key"], "needs a value"), (["-v=1"], "")])
def test_a_global_flag_written_wrongly(words: list[str], message: str) -> None:
    if message:
        with pytest.raises(UsageError, match=message):
            split_global_flags(words)
    else:  # `-v=1` is not a spelling of -v: left for argparse to refuse
        assert split_global_flags(words) == (["-v=1"], {})


def test_one_more_global_flag_is_one_more_table_row() -> None:
    extra = (*GLOBAL_FLAGS, GlobalFlag(names=("--log-format",), dest="log_format", takes_value=True, help="x"))
    rest, found = split_global_flags(["status", "--log-format", "json"], extra)
    assert rest == ["status"] and found == {"log_format": "json"}


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [(non_negative_int, "0", 0), (positive_int, "7", 7), (non_negative_float, "0", 0.0), (positive_float, "0.5", 0.5)],
)
def test_numeric_types_take_good_numbers(kind: object, text: str, value: float) -> None:
    assert callable(kind) and kind(text) == value


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (non_negative_int, "-1"),
        (non_negative_int, "1.5"),
        (positive_int, "0"),
        (positive_int, "x"),
        (non_negative_float, "-0.1"),
        (non_negative_float, "nan"),
        (positive_float, "inf"),
        (positive_float, "0"),
    ],
)
def test_numeric_types_refuse_bad_numbers(kind: object, text: str) -> None:
    assert callable(kind)
    with pytest.raises(argparse.ArgumentTypeError):
        kind(text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("JobNotOk: cpu_time_exceeded: over 100 ms", "cpu_time_exceeded"),
        ("JobNotOk: script_error: line 1: boom", "script_error"),
        ("Traceback (most recent call last):\n  ...\nValueError: bad", "ValueError"),
        ("", "unknown"),
    ],
)
def test_failure_kind_reads_the_outcome_from_rqs_failure_text(text: str, kind: str) -> None:
    assert failure_kind(text) == kind


def test_progress_is_off_for_json_and_yields_every_step() -> None:
    assert progress.wanted(as_json=True) is False
    assert list(progress.steps(["a", "b"], shown=False)) == ["a", "b"]
    assert list(progress.steps(["a", "b"], shown=True)) == ["a", "b"]
