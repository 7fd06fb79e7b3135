"""Hook points, priorities and reserved event names (sandbox/catalog.py, workers/bridge/hooks.py,
workers/bridge/event_book.py, coordinator/stores/events.py): pure parts, no stack."""

from __future__ import annotations

import pytest

from scriptpool.coordinator.stores.events import check_emittable
from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.catalog import HOOK_POINTS, RS_HOOK_POINTS, aliases, reserved_event_name
from scriptpool.workers.bridge.event_book import EventBook
from scriptpool.workers.bridge.hooks import priority_level, priority_value


def test_rs_llmspell_points_are_its_23_camel_case_names_and_none_is_reserved() -> None:
    assert len(RS_HOOK_POINTS) == len(set(RS_HOOK_POINTS)) == 23
    assert RS_HOOK_POINTS[0] == "SystemStartup" and RS_HOOK_POINTS[-1] == "WorkflowError"
    assert not set(RS_HOOK_POINTS) & set(HOOK_POINTS)
    assert all(reserved_event_name(point) is None for point in RS_HOOK_POINTS)


@pytest.mark.parametrize(
    ("name", "namespace"),
    [("session.created", "session.*"), ("session.anything", "session.*"), ("artifact.stored", "artifact.*"),
     ("job.finished", "job.*"), ("job.mine", "job.*"), ("state.changed", "state.changed")],
)  # fmt: skip
def test_lifecycle_names_are_reserved(name: str, namespace: str) -> None:
    assert reserved_event_name(name) == namespace
    with pytest.raises(InvalidArgument, match=f"reserved namespace '{namespace}'"):
        check_emittable(name)


@pytest.mark.parametrize("name", ["state.other", "sessions.x", "jobs", "user.login", "BeforeAgentInit", "Session.x"])
def test_other_names_may_be_emitted(name: str) -> None:
    assert reserved_event_name(name) is None
    assert check_emittable(name) == name


def test_every_hook_point_is_reserved() -> None:
    assert all(reserved_event_name(point) for point in HOOK_POINTS)


def test_priorities_are_rs_llmspell_levels_or_32_bit_integers() -> None:
    assert [priority_value(level, "p") for level in ("highest", "high", "normal", "low", "lowest")] == [
        -(2**31), -100, 0, 100, 2**31 - 1
    ]  # fmt: skip
    assert priority_value(None, "p") == 0 and priority_value("HIGH", "p") == -100 and priority_value(5, "p") == 5
    assert [priority_level(v) for v in (-(2**31), -100, 0, 100, 2**31 - 1, 5)] == [
        "highest", "high", "normal", "low", "lowest", "5"
    ]  # fmt: skip
    for bad in ("urgent", 2**31, 1.5, True, [1]):
        with pytest.raises(InvalidArgument, match="Hook.register: priority must be one of highest"):
            priority_value(bad, "Hook.register: priority")  # type: ignore[arg-type]


def test_the_book_orders_hooks_by_priority_then_registration() -> None:
    book = EventBook(language="lua")
    for hook_id, priority in [("a", 100), ("b", 0), ("c", -100), ("d", 0), ("e", -(2**31))]:
        book.add_hook(hook_id, "BeforeAgentInit", priority)
    assert [h.hook_id for h in book.ordered_hooks()] == ["e", "c", "b", "d", "a"]


def test_the_new_event_operations_have_snake_case_aliases() -> None:
    assert aliases("Event")["list_subscriptions"] == "listSubscriptions"
    assert aliases("Event")["get_stats"] == "getStats"
