"""Marshalling and limit resolution."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.catalog import canonical_op, snake_case
from scriptpool.sandbox.limits import MAX_LIMITS, LimitPolicy
from scriptpool.values import from_value, to_value

plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)


@given(plain_values)
def test_values_round_trip_through_protobuf(value: object) -> None:
    back = from_value(type(to_value(value)).FromString(to_value(value).SerializeToString()))
    assert back == value
    assert type(back) is type(value)


def test_nan_survives() -> None:
    assert math.isnan(from_value(to_value(float("nan"))))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [2**64, object(), {1: "x"}])
def test_unrepresentable_values_are_invalid_argument(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        to_value(bad)


def test_limits_fill_defaults_and_refuse_above_maximum() -> None:
    policy = LimitPolicy()
    resolved = policy.resolve({"cpu_time_ms": 100})
    assert resolved.cpu_time_ms == 100 and resolved.memory_bytes == policy.defaults.memory_bytes
    with pytest.raises(InvalidArgument, match="limits.wall_time_ms"):
        policy.resolve({"wall_time_ms": MAX_LIMITS.wall_time_ms + 1})


def test_catalog_aliases() -> None:
    assert snake_case("getReplayMetadata") == "get_replay_metadata"
    assert canonical_op("Artifact", "store_file") == "storeFile"
    assert canonical_op("State", "save") == "set"
    assert canonical_op("Session", "nope") is None


@pytest.mark.parametrize(
    ("language", "source"),
    [("lua", "return math.random()"), ("javascript", "Math.random()"), ("python", "import random\nrandom.random()")],
)
def test_a_given_seed_gives_the_same_random_values(language: str, source: str) -> None:
    from scriptpool.languages import Language
    from scriptpool.sandbox.host import OutputSink
    from scriptpool.sandbox.runner import ScriptJob, prewarm, runner_for

    class NoHost:
        def call(self, op: str, args: list[object]) -> object:
            return None

    prewarm()
    lang = Language(language)

    def draw(seed: int) -> object:
        job = ScriptJob(language=lang, source=source, random_seed=seed)
        return runner_for(lang).run(job, NoHost(), OutputSink(100))  # type: ignore[arg-type]

    assert draw(12345) == draw(12345)
    assert draw(12345) != draw(54321)
    assert draw(0) != draw(0)  # no seed: fresh entropy each time


@pytest.mark.parametrize(
    ("language", "source"),
    [
        ("lua", "return {os.time(), os.date('%Y', os.time())}"),
        ("javascript", "[Math.floor(Date.now() / 1000), String(new Date().getFullYear()), new Date(0).getFullYear()]"),
        ("python", "import datetime\n[int(datetime.datetime.now().timestamp()), str(datetime.date.today().year)]"),
    ],
)
def test_a_given_clock_start_sets_the_scripts_clock(language: str, source: str) -> None:
    import time

    from scriptpool.languages import Language
    from scriptpool.sandbox.host import OutputSink
    from scriptpool.sandbox.runner import ScriptJob, prewarm, runner_for

    class NoHost:
        def call(self, op: str, args: list[object]) -> object:
            return None

    prewarm()
    lang = Language(language)
    replayed = runner_for(lang).run(
        ScriptJob(language=lang, source=source, clock_start=1_000_000_000.0),
        NoHost(),  # type: ignore[arg-type]
        OutputSink(100),
    )
    assert isinstance(replayed, list)
    assert abs(int(replayed[0]) - 1_000_000_000) <= 2 and replayed[1] == "2001"  # type: ignore[arg-type]
    real = runner_for(lang).run(ScriptJob(language=lang, source=source), NoHost(), OutputSink(100))  # type: ignore[arg-type]
    assert isinstance(real, list) and abs(int(real[0]) - time.time()) <= 2  # type: ignore[arg-type]
    if language == "javascript":
        assert replayed[2] == 1970  # an explicit date is left alone
