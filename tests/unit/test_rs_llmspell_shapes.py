"""The rs-llmspell shapes of sessions and artifacts (issue 16) and the bridge's argument forms for
them: converters (scriptpool.core.session_values / artifact_values), the `status` filter, time
filters, paging options, and storeFile's 4-argument form. Against a fake BridgeCalls that records
each request and answers a canned response (the real stack: tests/integration)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from scriptpool.core.artifact_values import info_to_plain, mime_type_of
from scriptpool.core.script_times import iso_utc
from scriptpool.core.session_values import session_to_plain
from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.scratch_files import store_file_options
from scriptpool.v1 import artifacts_pb2, sessions_pb2
from scriptpool.values import PlainValue, from_value, to_value_map
from scriptpool.workers.bridge import artifacts, sessions
from scriptpool.workers.bridge.calls import BridgeCalls

CREATED, UPDATED = 1_790_000_000.25, 1_790_000_100.5


def _session(state: int = sessions_pb2.SESSION_STATE_SUSPENDED) -> sessions_pb2.Session:
    return sessions_pb2.Session(id="s1", name="n", description="d", state=state,  # type: ignore[arg-type]
                                tags=["a"], metadata=to_value_map({"team": "x"}), created_at=CREATED,
                                updated_at=UPDATED)  # fmt: skip


def _info(kind: str = "tool_result", custom: dict[str, PlainValue] | None = None) -> artifacts_pb2.ArtifactInfo:
    meta = artifacts_pb2.ArtifactMetadata(name="a.txt", description="desc", tags=["t"],
                                          custom=to_value_map(custom or {}))  # fmt: skip
    return artifacts_pb2.ArtifactInfo(id="a1", session_id="s1", type=kind, metadata=meta, content_hash="ab",
                                      size=12, created_at=CREATED, updated_at=UPDATED, version=3)  # fmt: skip


def test_a_session_has_status_custom_metadata_and_iso_times_beside_its_own_fields() -> None:
    plain = session_to_plain(_session())
    assert plain == {
        "id": "s1", "name": "n", "description": "d", "state": "suspended", "status": "suspended",
        "tags": ["a"], "metadata": {"team": "x"}, "custom_metadata": {"team": "x"}, "parent_session_id": None,
        "created_at": iso_utc(CREATED), "created_at_unix": CREATED,
        "updated_at": iso_utc(UPDATED), "updated_at_unix": UPDATED,
    }  # fmt: skip
    assert plain["created_at"] == "2026-09-21T14:13:20.250000+00:00"
    assert plain["metadata"] is not plain["custom_metadata"]  # a script changing one leaves the other


def test_an_artifact_record_has_rs_llmspell_fields_at_top_level_and_in_metadata() -> None:
    plain = info_to_plain(_info(custom={"mime_type": "text/csv", "rows": 2}), b"hello")
    meta = plain.pop("metadata")
    assert plain == {
        "id": "a1", "session_id": "s1", "type": "tool_result", "artifact_type": "tool_result", "name": "a.txt",
        "description": "desc", "tags": ["t"], "custom": {"mime_type": "text/csv", "rows": 2},
        "mime_type": "text/csv", "content_hash": "ab", "size": 12, "version": 3,
        "created_at": iso_utc(CREATED), "created_at_unix": CREATED,
        "updated_at": iso_utc(UPDATED), "updated_at_unix": UPDATED, "content": b"hello",
    }  # fmt: skip
    assert meta == {
        "name": "a.txt", "description": "desc", "tags": ["t"], "custom": {"mime_type": "text/csv", "rows": 2},
        "artifact_type": "tool_result", "mime_type": "text/csv", "size": 12, "version": 3,
        "created_at": iso_utc(CREATED), "created_at_unix": CREATED,
        "updated_at": iso_utc(UPDATED), "updated_at_unix": UPDATED,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "custom", "expected"),
    [
        ("tool_result", {"mime_type": "image/png"}, "image/png"),  # the script's own wins
        ("text", {"mime_type": "text/markdown"}, "text/markdown"),
        ("text", {}, "text/plain"),  # else the type's
        ("json", {}, "application/json"),
        ("binary", {}, "application/octet-stream"),
        ("image/png", {}, "image/png"),  # a type that is a MIME type
        ("tool_result", {}, None),  # else unknown
        ("agent_output", {"mime_type": ""}, None),
        ("agent_output", {"mime_type": 5}, None),
        ("a/b c", {}, None),
    ],
)
def test_mime_type_comes_from_the_metadata_then_the_type(kind: str, custom: dict[str, PlainValue],
                                                         expected: str | None) -> None:  # fmt: skip
    assert mime_type_of(kind, custom) == expected


class FakeBridge:
    """BridgeCalls that records each request and answers `answers[method name]`."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, Any]] = []
        self.current_session = "cur"
        self.content_bytes_limit = None
        self.sessions = self._stub()
        self.artifacts = self._stub()

    def _stub(self) -> Any:
        class Stub:
            def __getattr__(_, name: str) -> Callable[..., Any]:
                def method() -> None: ...

                method.__name__ = name
                return method

        return Stub()

    def unary(self, method: Callable[..., Any], request: Any) -> Any:
        self.requests.append((method.__name__, request))
        return self.answers[method.__name__]

    def call_time_left(self) -> float:
        return 1.0

    def charge_artifact_bytes(self, size: int, op: str) -> None: ...


def _list_sessions(opts: dict[str, PlainValue], next_cursor: str = "") -> tuple[PlainValue, Any]:
    answer = sessions_pb2.ListSessionsResponse(sessions=[_session()], next_cursor=next_cursor)
    bridge = FakeBridge({"List": answer})
    result = sessions.session_list(cast(BridgeCalls, bridge), "Session.list", [opts])
    return result, bridge.requests[0][1]


@pytest.mark.parametrize("opts", [{"status": "active"}, {"state": "active"}, {"state": "active", "status": "active"}])
def test_session_list_status_is_the_state_filter(opts: dict[str, PlainValue]) -> None:
    _, request = _list_sessions(opts)
    assert request.state == sessions_pb2.SESSION_STATE_ACTIVE


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"state": "active", "status": "completed"}, "disagree"),
        ({"status": "sleeping"}, "must be active, suspended, completed or failed"),
        ({"status": 1}, "status must be a string"),
        ({"created_after": "yesterday"}, "not an ISO-8601 time"),
        ({"updated_before": True}, "seconds since the epoch or an ISO-8601 string"),
        ({"offset": 2}, "unknown option 'offset'; allowed: state, status"),
    ],
)
def test_session_list_refuses_bad_filters_clearly(opts: dict[str, PlainValue], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _list_sessions(opts)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [(CREATED, CREATED), (1_790_000_000, 1_790_000_000.0), ("2026-09-21T14:13:20.25+00:00", CREATED),
     ("2026-09-21T14:13:20.25Z", CREATED), ("2026-09-21T14:13:20.25", CREATED)],
)  # fmt: skip
def test_time_filters_take_seconds_or_iso_8601_and_send_seconds(given: PlainValue, seconds: float) -> None:
    _, request = _list_sessions({"created_after": given, "updated_before": given})
    assert from_value(request.created_after) == seconds and from_value(request.updated_before) == seconds
    q = {"session_id": "s1", "created_after": given, "created_before": given}
    bridge = FakeBridge({"Query": artifacts_pb2.ArtifactList()})
    artifacts.query(cast(BridgeCalls, bridge), "Artifact.query", [q])
    sent = bridge.requests[0][1]
    assert from_value(sent.created_after) == seconds and from_value(sent.created_before) == seconds


def test_a_session_page_carries_its_next_cursor_and_the_cursor_goes_back() -> None:
    result, request = _list_sessions({"limit": 1, "cursor": "5"}, next_cursor="6")
    assert (request.page.limit, request.page.cursor) == (1, "5")
    assert isinstance(result, dict) and result["next_cursor"] == "6"
    items = result["items"]
    assert isinstance(items, list) and len(items) == 1
    last, _ = _list_sessions({})
    assert isinstance(last, dict) and last["next_cursor"] is None


@pytest.mark.parametrize(
    ("op", "handler", "method", "args"),
    [
        ("Artifact.list", artifacts.list_, "List", ["s1"]),
        ("Artifact.findByType", artifacts.find_by_type, "FindByType", ["s1", "text"]),
        ("Artifact.findByTag", artifacts.find_by_tag, "FindByTag", ["s1", "t"]),
        ("Artifact.search", artifacts.search, "Search", ["s1", "words"]),
    ],
)
def test_artifact_listings_page_with_trailing_options(op: str, handler: Any, method: str,
                                                      args: list[PlainValue]) -> None:  # fmt: skip
    answer = artifacts_pb2.ArtifactList(artifacts=[_info()], next_cursor="1000")
    bridge = FakeBridge({method: answer})
    first = handler(bridge, op, list(args))
    assert bridge.requests[-1][1].page.limit == artifacts.LIST_LIMIT  # no limit given: 1000, never silent
    assert first["next_cursor"] == "1000" and first["items"][0]["name"] == "a.txt"
    handler(bridge, op, [*args, {"limit": 10, "cursor": first["next_cursor"]}])
    assert (bridge.requests[-1][1].page.limit, bridge.requests[-1][1].page.cursor) == (10, "1000")
    with pytest.raises(InvalidArgument, match="unknown option 'offset'; allowed: limit, cursor"):
        handler(bridge, op, [*args, {"offset": 3}])
    with pytest.raises(InvalidArgument, match="must be a table/map"):
        handler(bridge, op, [*args, "more"])


def test_get_timeline_pages_with_cursor_as_another_name_for_after() -> None:
    timeline = sessions_pb2.Timeline(entries=[sessions_pb2.TimelineEntry(id="1-0", type="x")], next_after="1-0")
    bridge = FakeBridge({"GetTimeline": timeline})
    page = sessions.session_get_timeline(cast(BridgeCalls, bridge), "Session.getTimeline", ["s1", {"cursor": "0-5"}])
    assert bridge.requests[0][1].after == "0-5"
    assert isinstance(page, dict) and page["next_cursor"] == "1-0"
    with pytest.raises(InvalidArgument, match="disagree"):
        sessions.session_get_timeline(cast(BridgeCalls, bridge), "Session.getTimeline",
                                      ["s1", {"cursor": "0-5", "after": "0-6"}])  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["s", "f.txt"], (None, {})),
        (["s", "f.txt", {"name": "x"}], (None, {"name": "x"})),
        (["s", "f.txt", "tool_result"], ("tool_result", {})),
        (["s", "f.txt", "tool_result", {"tags": ["a"]}], ("tool_result", {"tags": ["a"]})),
        (["s", "f.txt", "text", {"type": "text"}], ("text", {"type": "text"})),
        (["s", "f.txt", "", None], (None, {})),
    ],
)
def test_store_file_takes_a_type_string_as_its_third_argument(args: list[PlainValue], expected: object) -> None:
    assert store_file_options(args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["s", "f.txt", "text", {"type": "binary"}], "disagree"),
        (["s", "f.txt", {"name": "x"}, {"name": "y"}], "must be a string when metadata follows"),
        (["s", "f.txt", "text", "more"], "metadata must be a table/map"),
        (["s", "f.txt", 5], "metadata must be a table/map"),
    ],
)
def test_store_file_refuses_unclear_argument_forms(args: list[PlainValue], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        store_file_options(args)
