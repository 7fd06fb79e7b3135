"""A Lua artifact id behaves as a string (issue 16): what `Artifact.store` returns is the id string,
and still answers the fields scriptpool scripts read (`.id`, `.content_hash`, `.version`, ...)."""

from __future__ import annotations

from scriptpool.client import ScriptpoolClient

from .helpers import result_of, run_lua

SOURCE = """
local sid = Session.create({name = "ids"})
local id = Artifact.store(sid, "text", "a.txt", "hello")
local plain = Artifact.list(sid)[1].id
local keyed = {}
keyed[id] = "found"
local v2 = Artifact.update(sid, id, "hello again")
return {
  is_string = type(id) == "string",
  length = #id, expected_length = #plain,
  prefix = id:sub(1, 8) == plain:sub(1, 8),
  concat = ("id:" .. id) == ("id:" .. plain),
  equal = id == plain, updated_same = v2 == id,
  key = keyed[plain],
  fields = {id = id.id == plain, hash = #id.content_hash, session = id.session_id == sid, version = v2.version},
  upper = ("abc"):upper(), len = ("abcd"):len(), other = ("abc").nothing == nil,
  returned = id,
}
"""


def test_a_lua_artifact_id_is_its_string_and_keeps_its_fields(client: ScriptpoolClient) -> None:
    answer = result_of(run_lua(client, SOURCE))
    assert isinstance(answer, dict)
    assert answer["is_string"] is True and answer["length"] == answer["expected_length"] == 36
    assert answer["prefix"] is True and answer["concat"] is True and answer["equal"] is True
    assert answer["updated_same"] is True and answer["key"] == "found"
    assert answer["fields"] == {"id": True, "hash": 64, "session": True, "version": 2}
    assert (answer["upper"], answer["len"], answer["other"]) == ("ABC", 4, True)  # other strings as before
    assert isinstance(answer["returned"], str) and len(answer["returned"]) == 36
