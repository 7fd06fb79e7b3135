"""Log settings: flags over the environment over the defaults; bad values are one line and exit 2;
the JSON format puts a record's fields in its line; the per-job line has its fields."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from collections.abc import Iterator

import pytest

from scriptpool.core.log_setup import FORMAT_VARIABLE, LEVEL_VARIABLE, QUIET_LOGGERS, LogSettings, configure
from scriptpool.errors import InvalidArgument
from scriptpool.workers.job_log import log_finished
from tests.conftest import CLI


def test_flags_win_over_the_environment_and_the_environment_over_the_defaults() -> None:
    env = {LEVEL_VARIABLE: "error", FORMAT_VARIABLE: "json"}
    assert LogSettings.resolve(environ={}) == LogSettings(level="WARNING", format="text")  # a client command
    assert LogSettings.resolve(server=True, environ={}) == LogSettings(level="INFO", format="text")
    assert LogSettings.resolve(server=True, environ=env) == LogSettings(level="ERROR", format="json")
    assert LogSettings.resolve(verbose=True, environ=env).level == "DEBUG"  # -v
    assert LogSettings.resolve(level="info", format="text", verbose=True, environ=env) == LogSettings(
        level="INFO", format="text"
    )


def test_what_a_server_resolved_is_what_the_processes_it_starts_resolve() -> None:
    environ: dict[str, str] = {}
    chosen = LogSettings.resolve(level="debug", format="json", server=True, environ={})
    chosen.export(environ)
    assert LogSettings.resolve(server=True, environ=environ) == chosen


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"level": "loud"}, "--log-level: 'loud'"),
        ({"format": "xml"}, "--log-format: 'xml'"),
        ({"environ": {LEVEL_VARIABLE: "verbose"}}, f"{LEVEL_VARIABLE}: 'verbose'"),
        ({"environ": {FORMAT_VARIABLE: "yaml"}}, f"{FORMAT_VARIABLE}: 'yaml'"),
    ],
)
def test_a_bad_value_names_where_it_came_from(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        LogSettings.resolve(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("flags", [["--log-level", "loud"], ["--log-format", "xml"]])
def test_a_bad_flag_is_one_line_and_exit_2(flags: list[str]) -> None:
    result = subprocess.run([*CLI, *flags, "doctor"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: INVALID_ARGUMENT: --log-")


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    for name, quiet_level in quiet.items():
        logging.getLogger(name).setLevel(quiet_level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _one_job_logged(log_format: str, outcome: str, attempt: int) -> str:
    out = io.StringIO()
    configure(LogSettings(level="INFO", format=log_format), stream=out)
    log_finished(
        job_id="j1", principal="alice", language="lua", outcome=outcome, attempt=attempt, queue_wait_seconds=0.25,
        run_seconds=1.5,
    )  # fmt: skip
    logging.getLogger("scriptpool.test").debug("not at INFO")
    return out.getvalue()


def test_json_lines_carry_the_job_line_s_fields(root_restored: None) -> None:
    (line,) = _one_job_logged("json", "ok", 1).splitlines()
    record = json.loads(line)
    assert record["logger"] == "scriptpool.jobs" and record["level"] == "INFO"
    assert {k: record[k] for k in ("job_id", "principal", "language", "outcome", "attempt")} == {
        "job_id": "j1", "principal": "alice", "language": "lua", "outcome": "ok", "attempt": 1,
    }  # fmt: skip
    assert record["queue_wait_seconds"] == 0.25 and record["run_seconds"] == 1.5
    assert record["message"].startswith("job j1 finished ok: ")


def test_text_lines_say_the_same_in_words(root_restored: None) -> None:
    assert (
        _one_job_logged("text", "script_error", 2)
        .rstrip()
        .endswith(
            "scriptpool.jobs INFO job j1 finished script_error: principal='alice' language=lua attempt=2 "
            "queue_wait=0.250s run=1.500s"
        )
    )


def test_rq_s_per_job_lines_stay_quiet_at_info_and_show_at_debug(root_restored: None) -> None:
    configure(LogSettings(level="INFO"), stream=io.StringIO())
    assert not logging.getLogger("rq.worker").isEnabledFor(logging.INFO)
    configure(LogSettings(level="DEBUG"), stream=io.StringIO())
    assert logging.getLogger("rq.worker").isEnabledFor(logging.DEBUG)
