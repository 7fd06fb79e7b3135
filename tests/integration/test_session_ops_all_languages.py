"""Every Session operation of the spec from Lua, JavaScript and Python, against the real stack.

The three scripts do the same steps and return the same summary, so one expected value checks all.
"""

from __future__ import annotations

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.values import PlainValue

from .helpers import result_of

LUA = """
local id = Session.create{name = "all-ops", tags = {"a"}, metadata = {k = 1}}
local s = Session.get(id)
local listed = 0
for _, x in ipairs(Session.list{tags = {"a"}}) do if x.id == id then listed = listed + 1 end end
local job_session = Session.getCurrent()
Session.setCurrent(id)
local current = Session.getCurrent()
Session.setCurrent(job_session)
local suspended = Session.suspend(id).state
local resumed = Session.resume(id).state
local md = Session.updateMetadata(id, {k = 2, extra = "x"})
local md2 = Session.getMetadata(id)
Session.setTags(id, {"a", "b"})
s:addTag("c")
s:removeTag("a")
local tags = Session.getTags(id)
local snap = s:save()
Session.updateMetadata(id, {k = 3})
local loaded = Session.load(id, snap)
local all = Session.saveAll()
local restored = Session.restoreRecent(1)
local timeline = Session.getTimeline(id, {types = {"session.saved"}})
local rmeta = Session.getReplayMetadata(id)
local can = Session.canReplay(id)
local completed = Session.complete(id).state
local ok, err = pcall(Session.resume, id)
Session.delete(id)
local gone_ok, gone = pcall(Session.get, id)
return {listed = listed, current_switched = current == id, suspended = suspended, resumed = resumed,
        md = md, md2 = md2, tags = tags, snap = snap, loaded_k = loaded.metadata.k, saved_this = all[id] ~= nil,
        restored = #restored, saved_entries = #timeline, events = rmeta.event_count > 0, can = can,
        completed = completed, resume_code = err.code, gone = gone.code, has_b = s:hasTag("b")}
"""

JS = """
const id = Session.create({name: "all-ops", tags: ["a"], metadata: {k: 1}});
const s = Session.get(id);
const listed = Session.list({tags: ["a"]}).filter((x) => x.id === id).length;
const jobSession = Session.getCurrent();
Session.setCurrent(id);
const current = Session.getCurrent();
Session.setCurrent(jobSession);
const suspended = Session.suspend(id).state;
const resumed = Session.resume(id).state;
const md = Session.updateMetadata(id, {k: 2, extra: "x"});
const md2 = Session.getMetadata(id);
Session.setTags(id, ["a", "b"]);
s.tags = Session.getTags(id);
s.addTag("c");
s.removeTag("a");
const tags = Session.getTags(id);
const snap = s.save();
Session.updateMetadata(id, {k: 3});
const loaded = Session.load(id, snap);
const all = Session.saveAll();
const restored = Session.restoreRecent(1);
const timeline = Session.getTimeline(id, {types: ["session.saved"]});
const rmeta = Session.getReplayMetadata(id);
const can = Session.canReplay(id);
const completed = Session.complete(id).state;
let resumeCode = null;
try { Session.resume(id); } catch (e) { resumeCode = e.code; }
Session.delete(id);
let gone = null;
try { Session.get(id); } catch (e) { gone = e.code; }
({listed, current_switched: current === id, suspended, resumed, md, md2, tags, snap, loaded_k: loaded.metadata.k,
  saved_this: id in all, restored: restored.length, saved_entries: timeline.length, events: rmeta.event_count > 0,
  can, completed, resume_code: resumeCode, gone, has_b: s.hasTag("b")})
"""

PY = """
sid = Session.create(name="all-ops", tags=["a"], metadata={"k": 1})
s = Session.get(sid)
listed = len([x for x in Session.list(tags=["a"]) if x.id == sid])
job_session = Session.getCurrent()
Session.setCurrent(sid)
current = Session.getCurrent()
Session.set_current(job_session)
suspended = Session.suspend(sid).state
resumed = Session.resume(sid).state
md = Session.updateMetadata(sid, {"k": 2, "extra": "x"})
md2 = Session.get_metadata(sid)
Session.setTags(sid, ["a", "b"])
s["tags"] = Session.getTags(sid)
s.addTag("c")
s.remove_tag("a")
tags = Session.getTags(sid)
snap = s.save()
Session.updateMetadata(sid, {"k": 3})
loaded = Session.load(sid, snap)
saved = Session.saveAll()
restored = Session.restore_recent(1)
timeline = Session.getTimeline(sid, {"types": ["session.saved"]})
rmeta = Session.getReplayMetadata(sid)
can = Session.can_replay(sid)
completed = Session.complete(sid).state
resume_code = None
try:
    Session.resume(sid)
except ScriptpoolError as e:
    resume_code = e.code
Session.delete(sid)
gone = None
try:
    Session.get(sid)
except ScriptpoolError as e:
    gone = e.code
{"listed": listed, "current_switched": current == sid, "suspended": suspended, "resumed": resumed, "md": md,
 "md2": md2, "tags": tags, "snap": snap, "loaded_k": loaded.metadata["k"], "saved_this": sid in saved,
 "restored": len(restored), "saved_entries": len(timeline), "events": rmeta["event_count"] > 0, "can": can,
 "completed": completed, "resume_code": resume_code, "gone": gone, "has_b": s.hasTag("b")}
"""

EXPECTED = {
    "listed": 1,
    "current_switched": True,
    "suspended": "suspended",
    "resumed": "active",
    "md": {"k": 2, "extra": "x"},
    "md2": {"k": 2, "extra": "x"},
    "tags": ["b", "c"],
    "snap": 1,
    "loaded_k": 2,
    "saved_this": True,
    "restored": 1,
    "saved_entries": 2,
    "events": True,
    "can": False,
    "completed": "completed",
    "resume_code": "FAILED_PRECONDITION",
    "gone": "NOT_FOUND",
    "has_b": True,
}


@pytest.mark.parametrize(
    ("language", "source"), [(Language.LUA, LUA), (Language.JAVASCRIPT, JS), (Language.PYTHON, PY)]
)
def test_every_session_operation(client: ScriptpoolClient, language: Language, source: str) -> None:
    assert result_of(client.run(language, source, timeout=60)) == EXPECTED


@pytest.mark.parametrize(
    ("language", "source"),
    [
        (Language.JAVASCRIPT, "const id = Artifact.store('', {content: 'hi', type: 'text', metadata: {name: 'a'}});"
                              "[typeof id, Artifact.getContent('', id)]"),
        (Language.PYTHON, "aid = Artifact.store('', {'content': 'hi', 'type': 'text', 'metadata': {'name': 'a'}})\n"
                          "[isinstance(aid, str) and 'string', Artifact.getContent('', aid)]"),
    ],
)  # fmt: skip
def test_artifact_store_returns_the_id_string(client: ScriptpoolClient, language: Language, source: str) -> None:
    assert result_of(client.run(language, source, timeout=60)) == ["string", "hi"]  # text stored as text


FILE_ROUND_TRIP = {
    Language.LUA: """
        local id = Artifact.store('', {content = 'bytes \\0 here', type = 'data', metadata = {name = 'orig'}})
        local saved = Artifact.saveToFile('', id, 'dir/copy.dat')
        local copy = Artifact.storeFile('', 'dir/copy.dat', {name = 'copy', type = 'data'})
        local ok, err = pcall(Artifact.storeFile, '', '../../etc/passwd')
        return {saved, Artifact.getContent('', copy), err.code}""",
    Language.PYTHON: """
aid = Artifact.store('', {'content': 'bytes \\0 here', 'type': 'data', 'metadata': {'name': 'orig'}})
saved = Artifact.save_to_file('', aid, 'dir/copy.dat')
copy = Artifact.store_file('', 'dir/copy.dat', {'name': 'copy', 'type': 'data'})
try:
    Artifact.storeFile('', '/../etc/passwd')
    code = None
except ScriptpoolError as e:
    code = e.code
[saved, Artifact.getContent('', copy), code]""",
}


@pytest.mark.parametrize("language", list(FILE_ROUND_TRIP))
def test_store_file_and_save_to_file_use_the_jobs_scratch_directory(
    client: ScriptpoolClient, language: Language
) -> None:
    result = result_of(client.run(language, FILE_ROUND_TRIP[language], timeout=60))
    # a Lua string that is valid UTF-8 comes back as text (docs/architecture.md, "Values")
    content = "bytes \x00 here" if language is Language.LUA else b"bytes \x00 here"
    assert result == ["dir/copy.dat", content, "PERMISSION_DENIED"]


EDGE_METADATA: dict[str, PlainValue] = {
    "safe": 2**53 - 1, "unsafe": 2**53 + 1, "i64min": -(2**63), "i64max": 2**63 - 1, "tiny": 5e-324,
                 "f": 0.1, "neg0": -0.0, "text": "ünï ✓ \U0001f600", "nested": [1, [2.5, {"k": None}]]}  # fmt: skip
ROUND_TRIP = {
    Language.LUA: "local id = Session.getCurrent() Session.updateMetadata(id, Session.getMetadata(INPUT.src)) "
    "return Session.getMetadata(id)",
    Language.JAVASCRIPT: "const id = Session.getCurrent(); Session.updateMetadata(id, Session.getMetadata(INPUT.src));"
    " Session.getMetadata(id)",
    Language.PYTHON: "sid = Session.getCurrent()\nSession.updateMetadata(sid, Session.getMetadata(INPUT['src']))\n"
    "Session.getMetadata(sid)",
}


@pytest.mark.parametrize("language", list(ROUND_TRIP))
def test_numbers_at_the_edges_of_lua_and_js_precision_round_trip(client: ScriptpoolClient, language: Language) -> None:
    """Metadata read by a script and written back is unchanged: 64-bit integers (BigInt in JS past
    2**53), floats, unicode. Lua cannot hold a nil inside a table, so `{"k": None}` comes back as {}."""
    source_id = client.create_session("edges", metadata=EDGE_METADATA).id
    target = client.create_session("copy").id
    result = result_of(client.run(language, ROUND_TRIP[language], session_id=target, inputs={"src": source_id}))
    expected = dict(EDGE_METADATA)
    if language is Language.LUA:
        expected["nested"] = [1, [2.5, {}]]
    assert result == expected


SCRATCH_BOUNDS_SCRIPT = """
local id = Artifact.store('', {content = string.rep('x', 1000), type = 'data'})
Artifact.saveToFile('', id, 'one')
Artifact.saveToFile('', id, 'two')
local _, over = pcall(Artifact.saveToFile, '', id, 'three')
local _, missing = pcall(Artifact.storeFile, '', 'three')
local _, deep = pcall(Artifact.saveToFile, '', id, string.rep('d/', 16) .. 'f')
return {over.code, over.message, missing.code, deep.code, deep.message}"""


def test_scratch_writes_are_bounded_with_clear_errors(client: ScriptpoolClient) -> None:
    """Through the real stack: a job's scratch bytes stop at its artifact_bytes (here 2 x 1000 of
    2500 fit, a third 1000 does not, and nothing is written), paths stop at 16 components."""
    job = client.run(Language.LUA, SCRATCH_BOUNDS_SCRIPT, limits={"artifact_bytes": 2500}, timeout=60)
    found = result_of(job)
    assert isinstance(found, list) and all(isinstance(part, str) for part in found), found
    over_code, over_message, missing, deep_code, deep_message = (str(part) for part in found)
    assert (over_code, missing, deep_code) == ("RESOURCE_EXHAUSTED", "NOT_FOUND", "INVALID_ARGUMENT")
    assert "artifact_bytes" in over_message and "2500" in over_message and "Errno" not in over_message
    assert "at most 16" in deep_message
    assert result_of(client.run(Language.LUA, "return 1", timeout=60)) == 1  # the stack is fine
