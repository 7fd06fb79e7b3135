"""The script clock records its reads and gives a replay's back in order (sandbox/script_clock.py)."""

from __future__ import annotations

import time

import pytest

from scriptpool.languages import Language
from scriptpool.sandbox.host import OutputSink
from scriptpool.sandbox.runner import ScriptJob, runner_for
from scriptpool.sandbox.script_clock import MAX_CLOCK_READS, ScriptClock
from tests.unit.engine_helpers import AnsweringHost


def test_reads_are_recorded_in_order() -> None:
    clock = ScriptClock()
    values = [clock.wall(), clock.monotonic(), clock.perf_counter(), clock.process_time()]
    assert clock.reads == values
    assert abs(values[0] - time.time()) < 60


def test_a_replay_gives_the_recorded_reads_back_then_the_shifted_clock() -> None:
    recorded = [100.5, 7.25]
    clock = ScriptClock(clock_start=1_000_000.0, replay=recorded)
    assert [clock.wall(), clock.monotonic()] == recorded
    shifted = clock.wall()
    assert 1_000_000.0 <= shifted < 1_000_060.0  # past the recorded reads: from the recorded start
    assert clock.reads == [*recorded, shifted]


def test_at_most_max_clock_reads_are_recorded() -> None:
    clock = ScriptClock(replay=[1.0] * (MAX_CLOCK_READS + 5))
    for _ in range(MAX_CLOCK_READS + 5):
        assert clock.wall() == 1.0
    assert len(clock.reads) == MAX_CLOCK_READS


LOOPS = {
    Language.LUA: "local t = 0 for i = 1, {n} do t = os.time() + os.clock() end return {{os.time(), os.clock()}}",
    Language.JAVASCRIPT: "let t = 0; for (let i = 0; i < {n}; i++) t = Date.now(); [Date.now(), String(new Date())]",
    Language.PYTHON: "import time\nfor i in range({n}):\n    t = time.time()\n[time.time(), time.monotonic()]",
}


@pytest.mark.parametrize("language", list(LOOPS))
def test_every_engine_records_at_most_max_clock_reads(language: Language) -> None:
    job = ScriptJob(language=language, source=LOOPS[language].format(n=MAX_CLOCK_READS))
    runner_for(language).run(job, AnsweringHost(), OutputSink(1 << 20))
    assert len(job.clock_reads) == MAX_CLOCK_READS


@pytest.mark.parametrize("language", list(LOOPS))
def test_every_engine_gives_a_replays_reads_back_then_its_shifted_clock(language: Language) -> None:
    recorded = ScriptJob(language=language, source=LOOPS[language].format(n=3))
    first = runner_for(language).run(recorded, AnsweringHost(), OutputSink(1 << 20))
    replayed = ScriptJob(
        language=language, source=recorded.source, clock_replay=tuple(recorded.clock_reads), clock_start=1.0
    )
    assert runner_for(language).run(replayed, AnsweringHost(), OutputSink(1 << 20)) == first
    assert replayed.clock_reads == recorded.clock_reads
    shortened = ScriptJob(  # one read fewer recorded: the last read comes from the clock started at 1970
        language=language, source=recorded.source, clock_replay=tuple(recorded.clock_reads[:-1]), clock_start=1.0
    )
    answer = runner_for(language).run(shortened, AnsweringHost(), OutputSink(1 << 20))
    assert answer != first and shortened.clock_reads[:-1] == recorded.clock_reads[:-1]
