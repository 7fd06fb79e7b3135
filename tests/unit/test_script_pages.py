"""Paged operations in the three engines (issue 16): the bridge answers `{items, next_cursor}`; the
script gets the items as its own list with `next_cursor` on it (nil/undefined/None when nothing
remains), and passes it back as `cursor`."""

from __future__ import annotations

import pytest

from scriptpool.languages import Language
from scriptpool.sandbox.catalog import PAGED_OPS
from scriptpool.sandbox.host import OutputSink
from scriptpool.sandbox.limits import JobLimits
from scriptpool.sandbox.runner import ScriptJob, runner_for
from scriptpool.values import PlainValue

ITEMS: list[PlainValue] = [{"id": "a1", "name": "one"}, {"id": "a2", "name": "two"}]


class PagingHost:
    """Two pages: the first has a cursor, the second (asked with cursor "2") has none."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[PlainValue]]] = []

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        self.calls.append((op, args))
        assert op in PAGED_OPS
        last = args[-1] if args else None
        if isinstance(last, dict) and last.get("cursor") == "2":
            return {"items": [{"id": "a3", "name": "three"}], "next_cursor": None}
        return {"items": list(ITEMS), "next_cursor": "2"}


def run(language: Language, source: str, host: PagingHost) -> PlainValue:
    job = ScriptJob(language=language, source=source, limits=JobLimits())
    return runner_for(language).run(job, host, OutputSink(10_000))


LUA = """
local first = Artifact.list("s")
local second = Artifact.list("s", {cursor = first.next_cursor})
local n = 0
for _ in pairs(first) do n = n + 1 end
return {#first, first.next_cursor, first[2].name, #second, second.next_cursor == nil, n, second}
"""
JS = """
const first = Artifact.list("s");
const second = Artifact.list("s", {cursor: first.next_cursor});
[first.length, first.next_cursor, first[1].name, second.length, second.next_cursor === undefined,
 Object.keys(first).length, second]
"""
PY = """
first = Artifact.list("s")
second = Artifact.list("s", cursor=first.next_cursor)
[len(first), first.next_cursor, first[1].name, len(second), second.next_cursor is None, len(list(first)),
 second]
"""


@pytest.mark.parametrize(("language", "source"), [(Language.LUA, LUA), (Language.JAVASCRIPT, JS),
                                                  (Language.PYTHON, PY)])  # fmt: skip
def test_a_page_is_a_list_with_its_next_cursor(language: Language, source: str) -> None:
    host = PagingHost()
    result = run(language, source, host)
    # the cursor is no item of the list (pairs/keys/iteration see two) and the list returns as a list
    assert result == [2, "2", "two", 1, True, 2, [{"id": "a3", "name": "three"}]]
    assert host.calls[1] == ("Artifact.list", ["s", {"cursor": "2"}])


@pytest.mark.parametrize(
    ("language", "source"),
    [
        (Language.LUA, "local s = Session.list{} return {s.next_cursor, s[1].id, type(s[1].suspend)}"),
        (Language.JAVASCRIPT, "const s = Session.list({}); [s.next_cursor, s[0].id, typeof s[0].suspend]"),
        (Language.PYTHON, "s = Session.list()\n[s.next_cursor, s[0].id, callable(s[0].suspend) and 'function']"),
    ],
)
def test_session_list_pages_keep_session_objects(language: Language, source: str) -> None:
    assert run(language, source, PagingHost()) == ["2", "a1", "function"]


@pytest.mark.parametrize("op", sorted(PAGED_OPS))
@pytest.mark.parametrize("language", [Language.LUA, Language.JAVASCRIPT, Language.PYTHON])
def test_every_paged_operation_gives_its_cursor(language: Language, op: str) -> None:
    global_name, name = op.split(".")
    source = {
        Language.LUA: f"return {global_name}.{name}('s').next_cursor",
        Language.JAVASCRIPT: f"{global_name}.{name}('s').next_cursor",
        Language.PYTHON: f"{global_name}.{name}('s').next_cursor",
    }[language]
    assert run(language, source, PagingHost()) == "2"
