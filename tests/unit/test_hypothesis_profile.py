"""Property tests are repeatable: the suite loads a derandomized Hypothesis profile (tests/conftest.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

DRAWN: list[list[int]] = []


@pytest.mark.skipif(os.environ.get("HYPOTHESIS_PROFILE", "repeatable") != "repeatable", reason="another profile")
def test_the_default_profile_is_derandomized_and_keeps_no_database() -> None:
    assert settings.default is not None
    assert settings.default.derandomize is True
    assert settings.default.database is None
    assert settings(max_examples=5).derandomize is True  # a test's own @settings inherits it


@pytest.mark.skipif(os.environ.get("HYPOTHESIS_PROFILE", "repeatable") != "repeatable", reason="another profile")
def test_a_property_test_draws_the_same_examples_twice() -> None:
    @settings(max_examples=20)
    @given(st.lists(st.integers(), max_size=5))
    def draw(values: list[int]) -> None:
        DRAWN.append(values)

    draw()
    first = list(DRAWN)
    DRAWN.clear()
    draw()
    assert DRAWN == first and len(first) > 1
