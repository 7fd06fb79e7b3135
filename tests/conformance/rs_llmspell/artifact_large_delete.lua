-- Conformance (issue 16): a large artifact round trip, then deletion.
-- Mirrors: examples/lua/session/artifacts.lua steps 8 and 10 (lexlapax/rs-llmspell).
-- Relies on: large content comes back equal; metadata.size; delete then get fails; list shrinks.

local sid = Session.create({name = "big things"})
Session.setCurrent(sid)

local big = string.rep("This is test data for compression. ", 2500) -- ~87 KB
local big_id = Artifact.store(sid, "system_generated", "large.txt", big, {mime_type = "text/plain", tags = {"large"}})
local small_id = Artifact.store(sid, "tool_result", "small.txt", "tiny", {})

local got = Artifact.get(sid, big_id)
assert(got.metadata.size == #big, "metadata.size is the stored size")
assert(got.content == big, "large content matches")
assert(#Artifact.list(sid) == 2)

Artifact.delete(sid, small_id)
local ok, err = pcall(Artifact.get, sid, small_id)
assert(not ok, "a deleted artifact cannot be read")
assert(tostring(err) ~= "")

local left = Artifact.list(sid)
assert(#left == 1 and left[1].name == "large.txt")

Session.complete(sid)
return {size = got.metadata.size, remaining = #left}
