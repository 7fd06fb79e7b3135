-- Conformance (issue 16): write a file with io, store it with the 4-argument storeFile, remove it.
-- Mirrors: examples/lua/session/artifacts.lua step 9 and examples/lua/session/user_artifacts.lua
-- step 4 (lexlapax/rs-llmspell), where the file is written first (there with io.open / a tool).
-- Relies on: absolute paths resolve inside the job's own root; io.open/write/read/close, io.lines,
-- os.remove there; storeFile(sid, path, type, meta) -> id; stored content and type readable back.

local sid = Session.create({name = "file upload"})
Session.setCurrent(sid)

local path = "/tmp/conformance_upload.txt"
local body = "first line from disk\nsecond line\n"
local f = assert(io.open(path, "w"))
f:write(body)
f:close()

local lines = {}
for line in io.lines(path) do lines[#lines + 1] = line end
assert(#lines == 2 and lines[1] == "first line from disk")

local r = assert(io.open(path, "r"))
assert(r:read("a") == body)
r:close()

local id = Artifact.storeFile(sid, path, "user_input", {source = "filesystem", original_path = path})
assert(type(id.content_hash) == "string" and #id.content_hash >= 16)

local a = Artifact.get(sid, id)
assert(a.content == body, "storeFile stored the file's bytes")
assert(type(a.metadata.artifact_type) == "string")
assert(a.metadata.custom.source == "filesystem")

assert(os.remove(path))
assert(io.open(path, "r") == nil, "file is gone after os.remove")

-- a path that climbs out of the job's root is refused
local ok = pcall(Artifact.storeFile, sid, "/../../etc/passwd", "user_input", {})
assert(not ok, "escaping the job root is refused")

Session.complete(sid)
return {stored = a.metadata.name, bytes = #a.content}
