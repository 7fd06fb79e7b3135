"""A script's own files through the real stack, in the jailed sandbox child: the job's scratch
directory is its root `/`; a file written with Lua io / Python open() / JavaScript fs is stored with
Artifact.storeFile (4-argument form) and read back after Artifact.saveToFile."""

from __future__ import annotations

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language

from .helpers import result_of

SCRIPTS = {
    Language.LUA: """
local sid = Session.getCurrent()
local f = assert(io.open("/data/in.txt", "w"))
f:write("from disk\\n", "line two\\n")
f:close()
local id = Artifact.storeFile(sid, "/data/in.txt", "text", {source = "filesystem"})
local a = Artifact.get(sid, id)
Artifact.saveToFile(sid, id, "/copy/out.txt")
local back = {}
for line in io.lines("/copy/out.txt") do back[#back + 1] = line end
assert(os.remove("/data/in.txt"))
local gone = io.open("/data/in.txt", "r") == nil
local ok, err = pcall(Artifact.storeFile, sid, "/../../etc/passwd", "text", {})
return {a.content, a.type, a.metadata.custom.source, a.metadata.name, back, gone, err.code}
""",
    Language.PYTHON: """
import os
sid = Session.getCurrent()
with open("/data/in.txt", "w") as f:
    f.write("from disk\\nline two\\n")
aid = Artifact.storeFile(sid, "/data/in.txt", "text", {"source": "filesystem"})
a = Artifact.get(sid, aid)
Artifact.saveToFile(sid, aid, "/copy/out.txt")
back = [line.rstrip("\\n") for line in open("/copy/out.txt")]
os.remove("/data/in.txt")
gone = not os.path.exists("/data/in.txt")
try:
    Artifact.storeFile(sid, "/../../etc/passwd", "text", {})
except ScriptpoolError as e:
    code = e.code
[a.content, a.type, a.metadata["custom"]["source"], a.metadata["name"], back, gone, code]
""",
    Language.JAVASCRIPT: """
const sid = Session.getCurrent();
fs.writeFile("/data/in.txt", "from disk\\nline two\\n");
const id = Artifact.storeFile(sid, "/data/in.txt", "text", {source: "filesystem"});
const a = Artifact.get(sid, id);
Artifact.saveToFile(sid, id, "/copy/out.txt");
const back = fs.readFile("/copy/out.txt", "utf8").split("\\n").filter((l) => l);
fs.remove("/data/in.txt");
const gone = !fs.exists("/data/in.txt");
let code = null;
try { Artifact.storeFile(sid, "/../../etc/passwd", "text", {}); } catch (e) { code = e.code; }
[a.content, a.type, a.metadata.custom.source, a.metadata.name, back, gone, code]
""",
}


@pytest.mark.parametrize("language", list(SCRIPTS))
def test_write_store_save_read_back_in_the_jobs_root(client: ScriptpoolClient, language: Language) -> None:
    job = client.run(language, SCRIPTS[language], timeout=60)
    assert result_of(job) == [
        "from disk\nline two\n", "text", "filesystem", "in.txt", ["from disk", "line two"], True, "PERMISSION_DENIED",
    ]  # fmt: skip


def test_files_do_not_outlive_their_job(client: ScriptpoolClient) -> None:
    """Each job starts with an empty root (the scratch directory is emptied between jobs)."""
    first = client.run(Language.LUA, 'local f = io.open("/left.txt", "w") f:write("x") return true', timeout=60)
    assert result_of(first) is True
    for _ in range(3):  # whichever child runs it
        assert result_of(client.run(Language.LUA, 'return io.open("/left.txt") == nil', timeout=60)) is True
