"""rs-llmspell shapes and paging (issue 16) from Lua, JavaScript and Python on the real stack:
`status`/`custom_metadata` and ISO-8601 times on sessions, the `status` filter, time filters as
seconds or ISO-8601, artifact records with `name`/`artifact_type`/`mime_type`/`custom` and metadata
with `artifact_type`/`mime_type`/`size`, `storeFile(sid, path, type, meta)`, and a `next_cursor` on
every paged answer that, passed back as `cursor`, gives the rest. The three scripts do the same steps
and return the same summary; gRPC paging of findByType/findByTag/search is checked directly."""

from __future__ import annotations

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.errors import InvalidArgument
from scriptpool.languages import Language
from scriptpool.v1 import artifacts_pb2, common_pb2

from .helpers import result_of

LUA = """
local tag = "pg-" .. Session.getCurrent()
local ids = {}
for i = 1, 3 do ids[i] = Session.create{name = "s" .. i, tags = {tag}, metadata = {k = i}} end
Session.suspend(ids[2])
local p1 = Session.list{tags = {tag}, limit = 2}
local p2 = Session.list{tags = {tag}, limit = 2, cursor = p1.next_cursor}
local susp = Session.list{tags = {tag}, status = "suspended"}
local both_ok, both = pcall(Session.list, {status = "active", state = "suspended"})
local s = Session.get(ids[1])
local iso_all = #Session.list{tags = {tag}, created_after = "2000-01-01T00:00:00Z"}
local num_all = #Session.list{tags = {tag}, created_after = s.created_at_unix - 3600}
local bad_ok, bad = pcall(Session.list, {created_after = "soon"})

for i = 1, 3 do
  Artifact.store("", "text", "alpha" .. i .. ".txt", "content " .. i,
                 {tags = {"t"}, description = "alpha", mime_type = i == 1 and "text/markdown" or nil})
end
local l1 = Artifact.list("", {limit = 2})
local l2 = Artifact.list("", {limit = 2, cursor = l1.next_cursor})
local t1 = Artifact.findByType("", "text", {limit = 2})
local t2 = Artifact.findByType("", "text", {limit = 2, cursor = t1.next_cursor})
local g1 = Artifact.findByTag("", "t", {limit = 1})
local f1 = Artifact.search("", "alpha", {limit = 2})
local q1 = Artifact.query{type = "text", limit = 2, sort = "name"}
local q2 = Artifact.query{type = "text", limit = 2, sort = "name", cursor = q1.next_cursor}
local recent = Artifact.query{created_after = "2000-01-01T00:00:00+00:00"}
local md
for _, a in ipairs(Artifact.list("")) do if a.name == "alpha1.txt" then md = a end end
local got = Artifact.get("", md.id)
Artifact.saveToFile("", md.id, "f.txt")
local fid = Artifact.storeFile("", "f.txt", "tool_result", {tags = {"file"}})
local stored = Artifact.get("", fid)
local tl1 = Session.getTimeline(ids[2], {limit = 1})
local tl2 = Session.getTimeline(ids[2], {limit = 1, cursor = tl1.next_cursor})
return {
  p1 = #p1, p1_more = p1.next_cursor ~= nil, p2 = #p2, p2_end = p2.next_cursor == nil,
  susp = #susp, susp_status = susp[1].status, susp_state = susp[1].state, susp_k = susp[1].custom_metadata.k,
  both = both.code, iso_time = s.created_at:sub(-6), unix_time = type(s.created_at_unix),
  iso_all = iso_all, num_all = num_all, bad = bad.code,
  l1 = #l1, l1_more = l1.next_cursor ~= nil, l2 = #l2, l2_end = l2.next_cursor == nil,
  t1 = #t1, t2 = #t2, g1 = #g1, g1_more = g1.next_cursor ~= nil, f1 = #f1, f1_more = f1.next_cursor ~= nil,
  q_names = {q1[1].name, q1[2].name, q2[1].name}, q2_end = q2.next_cursor == nil, recent = #recent,
  item = {name = md.name, artifact_type = md.artifact_type, mime_type = md.mime_type, tags = md.tags,
          description = md.description, size = md.size},
  meta = {got.metadata.artifact_type, got.metadata.mime_type, got.metadata.size},
  file = {stored.metadata.artifact_type, stored.name, stored.metadata.mime_type == nil},
  timeline = {#tl1, #tl2, tl1[1].id ~= tl2[1].id},
}
"""

JS = """
const tag = "pg-" + Session.getCurrent();
const ids = [1, 2, 3].map((i) => Session.create({name: "s" + i, tags: [tag], metadata: {k: i}}));
Session.suspend(ids[1]);
const p1 = Session.list({tags: [tag], limit: 2});
const p2 = Session.list({tags: [tag], limit: 2, cursor: p1.next_cursor});
const susp = Session.list({tags: [tag], status: "suspended"});
const codeOf = (f) => { try { f(); return null; } catch (e) { return e.code; } };
const both = codeOf(() => Session.list({status: "active", state: "suspended"}));
const s = Session.get(ids[0]);
const isoAll = Session.list({tags: [tag], created_after: "2000-01-01T00:00:00Z"}).length;
const numAll = Session.list({tags: [tag], created_after: s.created_at_unix - 3600}).length;
const bad = codeOf(() => Session.list({created_after: "soon"}));
for (const i of [1, 2, 3]) {
  const meta = {tags: ["t"], description: "alpha"};
  if (i === 1) meta.mime_type = "text/markdown";
  Artifact.store("", "text", "alpha" + i + ".txt", "content " + i, meta);
}
const l1 = Artifact.list("", {limit: 2});
const l2 = Artifact.list("", {limit: 2, cursor: l1.next_cursor});
const t1 = Artifact.findByType("", "text", {limit: 2});
const t2 = Artifact.findByType("", "text", {limit: 2, cursor: t1.next_cursor});
const g1 = Artifact.findByTag("", "t", {limit: 1});
const f1 = Artifact.search("", "alpha", {limit: 2});
const q1 = Artifact.query({type: "text", limit: 2, sort: "name"});
const q2 = Artifact.query({type: "text", limit: 2, sort: "name", cursor: q1.next_cursor});
const recent = Artifact.query({created_after: "2000-01-01T00:00:00+00:00"});
const md = Artifact.list("").find((a) => a.name === "alpha1.txt");
const got = Artifact.get("", md.id);
Artifact.saveToFile("", md.id, "f.txt");
const fid = Artifact.storeFile("", "f.txt", "tool_result", {tags: ["file"]});
const stored = Artifact.get("", fid);
const tl1 = Session.getTimeline(ids[1], {limit: 1});
const tl2 = Session.getTimeline(ids[1], {limit: 1, cursor: tl1.next_cursor});
({
  p1: p1.length, p1_more: p1.next_cursor !== undefined, p2: p2.length, p2_end: p2.next_cursor === undefined,
  susp: susp.length, susp_status: susp[0].status, susp_state: susp[0].state, susp_k: susp[0].custom_metadata.k,
  both, iso_time: s.created_at.slice(-6), unix_time: typeof s.created_at_unix,
  iso_all: isoAll, num_all: numAll, bad,
  l1: l1.length, l1_more: l1.next_cursor !== undefined, l2: l2.length, l2_end: l2.next_cursor === undefined,
  t1: t1.length, t2: t2.length, g1: g1.length, g1_more: g1.next_cursor !== undefined, f1: f1.length,
  f1_more: f1.next_cursor !== undefined,
  q_names: [q1[0].name, q1[1].name, q2[0].name], q2_end: q2.next_cursor === undefined, recent: recent.length,
  item: {name: md.name, artifact_type: md.artifact_type, mime_type: md.mime_type, tags: md.tags,
         description: md.description, size: md.size},
  meta: [got.metadata.artifact_type, got.metadata.mime_type, got.metadata.size],
  file: [stored.metadata.artifact_type, stored.name, stored.metadata.mime_type === null],
  timeline: [tl1.length, tl2.length, tl1[0].id !== tl2[0].id],
})
"""

PY = """
tag = "pg-" + Session.getCurrent()
ids = [Session.create(name="s%d" % i, tags=[tag], metadata={"k": i}) for i in (1, 2, 3)]
Session.suspend(ids[1])
p1 = Session.list(tags=[tag], limit=2)
p2 = Session.list(tags=[tag], limit=2, cursor=p1.next_cursor)
susp = Session.list(tags=[tag], status="suspended")
def code_of(f):
    try:
        f()
    except ScriptpoolError as e:
        return e.code
both = code_of(lambda: Session.list(status="active", state="suspended"))
s = Session.get(ids[0])
iso_all = len(Session.list(tags=[tag], created_after="2000-01-01T00:00:00Z"))
num_all = len(Session.list(tags=[tag], created_after=s.created_at_unix - 3600))
bad = code_of(lambda: Session.list(created_after="soon"))
for i in (1, 2, 3):
    meta = {"tags": ["t"], "description": "alpha"}
    if i == 1:
        meta["mime_type"] = "text/markdown"
    Artifact.store("", "text", "alpha%d.txt" % i, "content %d" % i, meta)
l1 = Artifact.list("", limit=2)
l2 = Artifact.list("", {"limit": 2, "cursor": l1.next_cursor})
t1 = Artifact.findByType("", "text", limit=2)
t2 = Artifact.find_by_type("", "text", limit=2, cursor=t1.next_cursor)
g1 = Artifact.findByTag("", "t", limit=1)
f1 = Artifact.search("", "alpha", limit=2)
q1 = Artifact.query({"type": "text", "limit": 2, "sort": "name"})
q2 = Artifact.query({"type": "text", "limit": 2, "sort": "name", "cursor": q1.next_cursor})
recent = Artifact.query({"created_after": "2000-01-01T00:00:00+00:00"})
md = [a for a in Artifact.list("") if a.name == "alpha1.txt"][0]
got = Artifact.get("", md.id)
Artifact.saveToFile("", md.id, "f.txt")
fid = Artifact.storeFile("", "f.txt", "tool_result", {"tags": ["file"]})
stored = Artifact.get("", fid)
tl1 = Session.getTimeline(ids[1], limit=1)
tl2 = Session.getTimeline(ids[1], limit=1, cursor=tl1.next_cursor)
{
    "p1": len(p1), "p1_more": p1.next_cursor is not None, "p2": len(p2), "p2_end": p2.next_cursor is None,
    "susp": len(susp), "susp_status": susp[0].status, "susp_state": susp[0].state,
    "susp_k": susp[0].custom_metadata["k"], "both": both, "iso_time": s.created_at[-6:],
    "unix_time": isinstance(s.created_at_unix, float) and "number", "iso_all": iso_all, "num_all": num_all,
    "bad": bad, "l1": len(l1), "l1_more": l1.next_cursor is not None, "l2": len(l2),
    "l2_end": l2.next_cursor is None, "t1": len(t1), "t2": len(t2), "g1": len(g1),
    "g1_more": g1.next_cursor is not None, "f1": len(f1), "f1_more": f1.next_cursor is not None,
    "q_names": [q1[0].name, q1[1].name, q2[0].name], "q2_end": q2.next_cursor is None, "recent": len(recent),
    "item": {"name": md.name, "artifact_type": md.artifact_type, "mime_type": md.mime_type, "tags": md.tags,
             "description": md.description, "size": md.size},
    "meta": [got.metadata["artifact_type"], got.metadata["mime_type"], got.metadata["size"]],
    "file": [stored.metadata["artifact_type"], stored.name, stored.metadata["mime_type"] is None],
    "timeline": [len(tl1), len(tl2), tl1[0]["id"] != tl2[0]["id"]],
}
"""

EXPECTED = {
    "p1": 2, "p1_more": True, "p2": 1, "p2_end": True,
    "susp": 1, "susp_status": "suspended", "susp_state": "suspended", "susp_k": 2,
    "both": "INVALID_ARGUMENT", "iso_time": "+00:00", "unix_time": "number",
    "iso_all": 3, "num_all": 3, "bad": "INVALID_ARGUMENT",
    "l1": 2, "l1_more": True, "l2": 1, "l2_end": True,
    "t1": 2, "t2": 1, "g1": 1, "g1_more": True, "f1": 2, "f1_more": True,
    "q_names": ["alpha1.txt", "alpha2.txt", "alpha3.txt"], "q2_end": True, "recent": 3,
    "item": {"name": "alpha1.txt", "artifact_type": "text", "mime_type": "text/markdown", "tags": ["t"],
             "description": "alpha", "size": 9},
    "meta": ["text", "text/markdown", 9],
    "file": ["tool_result", "f.txt", True],
    "timeline": [1, 1, True],
}  # fmt: skip


@pytest.mark.parametrize(
    ("language", "source"), [(Language.LUA, LUA), (Language.JAVASCRIPT, JS), (Language.PYTHON, PY)]
)
def test_rs_llmspell_shapes_and_paging(client: ScriptpoolClient, language: Language, source: str) -> None:
    assert result_of(client.run(language, source, timeout=60)) == EXPECTED


def test_find_and_search_page_over_grpc(client: ScriptpoolClient) -> None:
    """FindByType/FindByTag/Search take a page and answer a next_cursor, as List and Query do."""
    job = client.run(Language.LUA, """
        for i = 1, 3 do Artifact.store("", "text", "beta" .. i, "x", {tags = {"b"}, description = "beta"}) end
        return Session.getCurrent()""", timeout=60)  # fmt: skip
    session_id = result_of(job)
    assert isinstance(session_id, str)
    A = artifacts_pb2

    def find_by_type(page: common_pb2.PageRequest | None) -> A.ArtifactList:
        return client.artifacts.find_by_type(A.FindByTypeRequest(session_id=session_id, type="text", page=page))

    def find_by_tag(page: common_pb2.PageRequest | None) -> A.ArtifactList:
        return client.artifacts.find_by_tag(A.FindByTagRequest(session_id=session_id, tag="b", page=page))

    def search(page: common_pb2.PageRequest | None) -> A.ArtifactList:
        return client.artifacts.search(A.SearchArtifactsRequest(session_id=session_id, text="beta", page=page))

    for method in (find_by_type, find_by_tag, search):
        first = method(common_pb2.PageRequest(limit=2))
        assert len(first.artifacts) == 2 and first.next_cursor
        rest = method(common_pb2.PageRequest(limit=2, cursor=first.next_cursor))
        assert len(rest.artifacts) == 1 and not rest.next_cursor
        seen = {a.id for a in first.artifacts} | {a.id for a in rest.artifacts}
        assert len(seen) == 3
        everything = method(None)  # no page: up to 1000 at once, as before
        assert len(everything.artifacts) == 3 and not everything.next_cursor
        with pytest.raises(InvalidArgument, match="above the maximum 1000"):
            method(common_pb2.PageRequest(limit=1001))
        with pytest.raises(InvalidArgument, match="invalid cursor"):
            method(common_pb2.PageRequest(cursor="not-a-cursor"))
