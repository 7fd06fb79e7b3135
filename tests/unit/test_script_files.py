"""A script's own files in each engine (Lua io/os, Python open()/os, JavaScript fs), over a real
directory (no jail here: tests/integration/test_script_files.py runs them in the real sandbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scriptpool.languages import Language
from scriptpool.sandbox.errors import CallLimitExceeded
from scriptpool.sandbox.host import OutputSink
from scriptpool.sandbox.limits import JobLimits
from scriptpool.sandbox.runner import ScriptJob, runner_for
from scriptpool.sandbox.scratch_files import ScratchFileHost
from scriptpool.values import PlainValue
from tests.unit.engine_helpers import AnsweringHost


def run(language: Language, source: str, root: Path, limits: JobLimits | None = None) -> tuple[PlainValue, str]:
    host = ScratchFileHost(AnsweringHost(), str(root), 1 << 20)
    output = OutputSink(1 << 16)
    job = ScriptJob(language=language, source=source, limits=limits or JobLimits())
    try:
        return runner_for(language).run(job, host, output), output.text()
    finally:
        host.close_all()


LUA = r"""
local f = assert(io.open("/tmp/t.txt", "w"))
assert(f:write("first\n", 42, " ", 1.5, "\n") == f)
f:close()
local lines = {}
for line in io.lines("/tmp/t.txt") do lines[#lines + 1] = line end
local r = assert(io.open("/tmp/t.txt", "r"))
local word, n, x = r:read("l", "n", "n")
local at = r:seek("cur")
local rest = r:read("a")
local at_end = r:read("l")
r:seek("set", 1)
local three = r:read(3)
r:close()
local closed_ok, closed_err = pcall(r.read, r)
local missing, message, code = io.open("/no/such", "r")
local bad_mode = pcall(io.open, "/tmp/t.txt", "rw")
io.write("via io.write ", 7, "\n")
assert(os.rename("/tmp/t.txt", "/moved.txt"))
local removed = os.remove("/moved.txt")
local again, again_message = os.remove("/moved.txt")
return {lines = lines, word = word, n = n, x = x, at = at, rest = rest, at_end = at_end == nil, three = three,
        closed = closed_err.code, missing = missing == nil, message = message, code = code,
        bad_mode = bad_mode, removed = removed, again = again == nil, again_message = again_message,
        file_type = io.type(r), bytes = string.char(0, 255)}
"""


def test_lua_io_and_os(tmp_path: Path) -> None:
    result, output = run(Language.LUA, LUA, tmp_path)
    assert isinstance(result, dict)
    assert result["lines"] == ["first", "42 1.5"] and result["word"] == "first"
    assert (result["n"], result["x"], result["at"]) == (42, 1.5, 12)
    assert result["rest"] == "\n" and result["at_end"] is True and result["three"] == "irs"
    assert result["closed"] == "INVALID_ARGUMENT" and result["missing"] is True
    assert result["code"] == "NOT_FOUND" and str(result["message"]).startswith("NOT_FOUND: ")
    assert result["bad_mode"] is False and result["removed"] is True and result["again"] is True
    assert str(result["again_message"]).startswith("NOT_FOUND") and result["file_type"] == "closed file"
    assert output == "via io.write 7\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tmp"] and list((tmp_path / "tmp").iterdir()) == []


def test_lua_binary_bytes_are_exact(tmp_path: Path) -> None:
    source = r"""
    local all = {} for i = 0, 255 do all[#all + 1] = string.char(i) end
    local data = table.concat(all)
    local f = io.open("/b.bin", "wb") f:write(data) f:close()
    local r = io.open("/b.bin", "rb") local back = r:read("a") r:close()
    return back == data and #back"""
    assert run(Language.LUA, source, tmp_path)[0] == 256
    assert (tmp_path / "b.bin").read_bytes() == bytes(range(256))


PYTHON = r"""
import os
from os.path import exists, join
with open("/data/t.txt", "w") as f:
    f.write("héllo\nworld\n")
with open(join("/data", "t.txt")) as f:
    lines = list(f)
with open("/data/t.txt", "rb") as f:
    raw = f.read()
with open("/data/t.txt", "a") as f:
    f.writelines(["more"])
f = open("/data/t.txt")
first = f.read(2)
at = f.tell()
f.seek(0)
line = f.readline()
f.close()
with open("/data/b.bin", "wb") as f:
    f.write(bytes([0, 255]))
os.rename("/data/b.bin", "/data/c.bin")
listing = os.listdir("/data")
was = exists("/data/c.bin")
os.remove("/data/c.bin")
try:
    open("/data/c.bin")
    missing = None
except NotFound as e:
    missing = e.code
try:
    os.system("id")
except AttributeError as e:
    no_system = "system" in str(e)
try:
    open("/data/t.txt", "w").write(b"bytes in text mode")
except ScriptpoolError as e:
    wrong_type = e.code
{"lines": lines, "raw": raw, "first": first, "at": at, "line": line, "listing": listing, "was": was,
 "now": os.path.exists("/data/c.bin"), "missing": missing, "no_system": no_system, "wrong_type": wrong_type,
 "text": open("/data/t.txt").read(), "binary": open("/data/t.txt", "rb").read(3)}
"""


def test_python_open_and_os(tmp_path: Path) -> None:
    result, _ = run(Language.PYTHON, PYTHON, tmp_path)
    assert result == {
        "lines": ["héllo\n", "world\n"], "raw": "héllo\nworld\n".encode(), "first": "hé", "at": 3,
        "line": "héllo\n", "listing": ["c.bin", "t.txt"], "was": True, "now": False, "missing": "NOT_FOUND",
        "no_system": True, "wrong_type": "INVALID_ARGUMENT", "text": "", "binary": b"",
    }  # fmt: skip
    # open(..., "w") above truncated t.txt before the refused write: as Python's own open() would


JAVASCRIPT = r"""
fs.writeFile("/out/a.txt", "héllo");
fs.appendFile("/out/a.txt", " more");
fs.writeFile("/out/b.bin", new Uint8Array([0, 255, 3]));
const text = fs.readFile("/out/a.txt", "utf8");
const bytes = fs.readFile("/out/b.bin");
let escape = null;
try { fs.readFile("/../etc/passwd"); } catch (e) { escape = e.code; }
const listed = fs.list("/out");
fs.rename("/out/b.bin", "/out/c.bin");
fs.remove("/out/c.bin");
({ text, isBytes: bytes instanceof Uint8Array, bytes: Array.from(bytes), escape, listed,
   gone: fs.exists("/out/c.bin"), there: fs.existsSync("/out/a.txt"), root: fs.list(),
   raw: fs.readFile("/out/a.txt") instanceof Uint8Array })
"""


def test_javascript_fs(tmp_path: Path) -> None:
    result, _ = run(Language.JAVASCRIPT, JAVASCRIPT, tmp_path)
    assert result == {
        "text": "héllo more", "isBytes": True, "bytes": [0, 255, 3], "escape": "PERMISSION_DENIED",
        "listed": ["a.txt", "b.bin"], "gone": False, "there": True, "root": ["out"], "raw": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("language", "source"),
    [
        (Language.LUA, 'for i = 1, 50 do local f = io.open("/f", "w") f:write("x") f:close() end return 1'),
        (Language.PYTHON, 'for i in range(50):\n    with open("/f", "w") as f:\n        f.write("x")\n1'),
        (Language.JAVASCRIPT, 'for (let i = 0; i < 50; i++) fs.writeFile("/f", "x"); 1'),
    ],
)  # fmt: skip
def test_file_operations_are_not_global_calls(tmp_path: Path, language: Language, source: str) -> None:
    """They are local system calls in the child: a job limited to 5 global calls makes 150 of them."""
    assert run(language, source, tmp_path, JobLimits(max_global_calls=5))[0] == 1
    with pytest.raises(CallLimitExceeded):
        run(language, _six_calls(language), tmp_path, JobLimits(max_global_calls=5))


def _six_calls(language: Language) -> str:
    if language is Language.LUA:
        return "for i = 1, 6 do Session.getCurrent() end"
    if language is Language.PYTHON:
        return "for i in range(6):\n    Session.getCurrent()"
    return "for (let i = 0; i < 6; i++) Session.getCurrent();"
