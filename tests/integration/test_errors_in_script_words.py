"""Refusals speak the script's language (issue 16): a Lua or JavaScript script never sees Python
type names (`dict`, `NoneType`, `str`), only its own words for a value's kind."""

from __future__ import annotations

import re

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language

from .helpers import result_of

PYTHON_TYPE_NAMES = re.compile(r"\b(dict|NoneType|str|bytes|int|float|bool|tuple)\b")

SOURCES = {
    Language.LUA: """
local sid = Session.create({name = "words"})
local calls = {
  function() return Session.list(5) end,
  function() return Artifact.store(sid, "text", "n", {1, 2}) end,
  function() return State.increment("global", "k", "x") end,
  function() return Session.create({name = {1}}) end,
  function() return Hook.list(5) end,
  function() return Artifact.query({session_id = sid, limit = "x"}) end,
}
local out = {}
for i, f in ipairs(calls) do local ok, e = pcall(f) out[i] = ok and "ok" or tostring(e) end
return out
""",
    Language.JAVASCRIPT: """
const sid = Session.create({name: "words"});
const calls = [
  () => Session.list(5),
  () => Artifact.store(sid, "text", "n", {a: 1}),
  () => State.increment("global", "k", "x"),
  () => Session.create({name: [1]}),
  () => Hook.list(5),
  () => Artifact.query({session_id: sid, limit: "x"}),
];
calls.map((f) => { try { f(); return "ok"; } catch (e) { return String(e.message); } });
""",
    Language.PYTHON: """
sid = Session.create({"name": "words"})
calls = [
    lambda: Session.list(5),
    lambda: Artifact.store(sid, "text", "n", {"a": 1}),
    lambda: State.increment("global", "k", "x"),
    lambda: Session.create({"name": [1]}),
    lambda: Hook.list(5),
    lambda: Artifact.query({"session_id": sid, "limit": "x"}),
]
out = []
for f in calls:
    try:
        f()
        out.append("ok")
    except Exception as e:
        out.append(str(e))
out
""",
}

EXPECTED = {  # the kind each refusal names, in the language's words
    Language.LUA: ["got a number", "got a table", "got a string", "got a table", "got a number", "got a string"],
    Language.JAVASCRIPT: [
        "got a number",
        "got an object",
        "got a string",
        "got an array",
        "got a number",
        "got a string",
    ],
    Language.PYTHON: ["got an int", "got a dict", "got a str", "got a list", "got an int", "got a str"],
}  # fmt: skip


@pytest.mark.parametrize("language", list(SOURCES))
def test_refusals_name_kinds_in_the_scripts_language(client: ScriptpoolClient, language: Language) -> None:
    messages = result_of(client.run(language, SOURCES[language]))
    assert isinstance(messages, list) and len(messages) == len(EXPECTED[language])
    for message, expected in zip(messages, EXPECTED[language], strict=True):
        assert isinstance(message, str) and expected in message, (message, expected)
        if language is not Language.PYTHON:
            assert not PYTHON_TYPE_NAMES.search(message.replace("got a string", "")), message
