"""Content comes back as it was given (issue 16, item 2), through the real stack: text stored as
text is a string (Python `str`, JS `string`), bytes are bytes (`bytes`, `Uint8Array`), whatever the
artifact's type, its size (inline below the lazy-content threshold, read on first access above it)
and the read path (`Artifact.get(...).content`, `Artifact.getContent`). Lua strings are byte
strings: there every read gives back exactly the bytes stored. Versions that do not say how their
content was given (older data, gRPC clients) keep the old rule: a string for text/code when valid UTF-8."""

from __future__ import annotations

import itertools

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.errors import InvalidArgument
from scriptpool.languages import Language
from scriptpool.v1 import artifacts_pb2
from scriptpool.values import PlainValue
from scriptpool.workers.bridge.artifacts import INLINE_CONTENT_BYTES

from .helpers import result_of

TYPES = ("text", "code", "json", "binary", "my.custom:type")
SIZES = (10, INLINE_CONTENT_BYTES + 5000)
KINDS = ("text", "bytes", "utf8_bytes")  # a string; bytes that are not UTF-8; bytes that happen to be UTF-8
CASES: list[PlainValue] = [{"type": t, "size": s, "kind": k} for t, s, k in itertools.product(TYPES, SIZES, KINDS)]

SCRIPTS = {
    Language.JAVASCRIPT: """
const kindOf = (v) => typeof v === "string" ? "string" : (v instanceof Uint8Array ? "bytes" : typeof v);
const out = [];
for (const c of INPUT.cases) {
  let content;
  if (c.kind === "text") content = "é" + "x".repeat(c.size);
  else {
    content = new Uint8Array(c.size);
    for (let i = 0; i < c.size; i++) content[i] = c.kind === "utf8_bytes" ? 97 : i % 256;
  }
  const same = (v) => typeof content === "string" ? v === content
    : v instanceof Uint8Array && v.length === content.length && v.every((x, i) => x === content[i]);
  const id = Artifact.store("", {content: content, type: c.type, metadata: {name: c.type + c.size + c.kind}});
  const a = Artifact.get("", id);
  const lazy = "get" in Object.getOwnPropertyDescriptor(a, "content");
  const viaGet = a.content;
  const viaGetContent = Artifact.getContent("", id);
  out.push([kindOf(viaGet), same(viaGet), kindOf(viaGetContent), same(viaGetContent), lazy]);
}
out
""",
    Language.PYTHON: """
def kind_of(v):
    return "string" if isinstance(v, str) else ("bytes" if isinstance(v, bytes) else "other")
out = []
for c in INPUT["cases"]:
    if c["kind"] == "text":
        content = "é" + "x" * c["size"]
    elif c["kind"] == "utf8_bytes":
        content = b"a" * c["size"]
    else:
        content = bytes(i % 256 for i in range(c["size"]))
    aid = Artifact.store("", {"content": content, "type": c["type"],
                              "metadata": {"name": c["type"] + str(c["size"]) + c["kind"]}})
    a = Artifact.get("", aid)
    lazy = "content" not in a
    via_get = a["content"] if c["size"] % 2 else a.content
    via_get_content = Artifact.getContent("", aid)
    out.append([kind_of(via_get), via_get == content, kind_of(via_get_content), via_get_content == content, lazy])
out
""",
    Language.LUA: """
local out = {}
for i, c in ipairs(INPUT.cases) do
  local content
  if c.kind == "text" then content = "é" .. string.rep("x", c.size)
  elseif c.kind == "utf8_bytes" then content = string.rep("a", c.size)
  else
    local t = {}
    for j = 0, c.size - 1 do t[#t + 1] = string.char(j % 256) end
    content = table.concat(t)
  end
  local id = Artifact.store("", {content = content, type = c.type, metadata = {name = c.type .. c.size .. c.kind}})
  local a = Artifact.get("", id)
  local lazy = rawget(a, "content") == nil
  local via_get = a.content
  local via_get_content = Artifact.getContent("", id)
  out[i] = {type(via_get), via_get == content, type(via_get_content), via_get_content == content, lazy}
end
return out
""",
}


@pytest.mark.parametrize("language", list(SCRIPTS), ids=lambda lang: lang.value)
def test_content_comes_back_as_it_was_given(client: ScriptpoolClient, language: Language) -> None:
    job = client.run(language, SCRIPTS[language], inputs={"cases": CASES}, timeout=120)
    found = result_of(job)
    assert isinstance(found, list) and len(found) == len(CASES)
    for case, got in zip(CASES, found, strict=True):
        assert isinstance(case, dict) and isinstance(case["size"], int)
        kind = "string" if language is Language.LUA or case["kind"] == "text" else "bytes"
        lazy = case["size"] > INLINE_CONTENT_BYTES
        assert got == [kind, True, kind, True, lazy], case


def test_versions_that_do_not_say_keep_the_type_rule(client: ScriptpoolClient) -> None:
    """A version stored without content_encoding (older data; a gRPC client that does not set it):
    text/code content that is valid UTF-8 is a string, anything else bytes, as before."""
    session_id = client.create_session("old").id
    ids = {}
    for kind in ("text", "data"):
        header = artifacts_pb2.StoreArtifactChunk(session_id=session_id, type=kind)
        header.metadata.name = kind
        ids[kind] = client.store_artifact(header, [b"plain words"]).id
    source = "[Artifact.get('', INPUT['text']).content, Artifact.getContent('', INPUT['data'])]"
    assert result_of(client.run(Language.PYTHON, source, session_id=session_id, inputs=ids)) == [
        "plain words",
        b"plain words",
    ]
    info, _ = client.read_artifact(session_id, ids["text"])
    assert info.content_encoding == ""
    stored = result_of(client.run(Language.PYTHON, "Artifact.store('', {'content': 'x', 'type': 'data'})",
                                  session_id=session_id))  # fmt: skip
    assert isinstance(stored, str)
    info, content = client.read_artifact(session_id, stored)
    assert (info.content_encoding, b"".join(content)) == ("utf-8", b"x")


def test_an_unknown_content_encoding_is_refused(client: ScriptpoolClient) -> None:
    session_id = client.create_session("enc").id
    header = artifacts_pb2.StoreArtifactChunk(session_id=session_id, type="text", content_encoding="latin-1")
    with pytest.raises(InvalidArgument, match="allowed: utf-8, binary"):
        client.store_artifact(header, [b"x"])
