-- Conformance (issue 16): listing and querying artifacts, building an index from the items.
-- Mirrors: examples/lua/session/artifacts.lua steps 5 and 7, and
-- examples/lua/session/user_artifacts.lua steps 6 and 8 (lexlapax/rs-llmspell).
-- Relies on: list/query items are flat, with name, artifact_type, size, mime_type (when given),
-- custom, created_at (ISO-8601); Artifact.list("") = current session; query filters type/tags/time.

local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d"
local sid = Session.create({name = "user data", tags = {"uploads"}})
Session.setCurrent(sid)

local csv = "ts,temp\n2024-01-15T10:00:00,22.5\n2024-01-15T10:15:00,22.7\n"
Artifact.store(sid, "user_input", "readme.md", "# Project\n\nNotes.", {
  author = "jo", tags = {"project", "documentation"}, mime_type = "text/markdown",
})
Artifact.store(sid, "user_input", "sensors.csv", csv, {format = "csv", rows = 2, tags = {"sensor"}})
Artifact.store(sid, "tool_result", "summary.txt", "two readings", {tags = {"summary"}})

local items = Artifact.list(sid)
assert(#items == 3)
local by_name, index = {}, {}
for _, a in ipairs(items) do
  assert(type(a.name) == "string", "list items carry name")
  assert(type(a.artifact_type) == "string", "list items carry artifact_type")
  assert(type(a.size) == "number" and a.size > 0)
  assert(type(a.created_at) == "string" and a.created_at:match(ISO))
  assert(type(a.custom) == "table")
  by_name[a.name] = a
  index[a.artifact_type] = (index[a.artifact_type] or 0) + 1
end
assert(by_name["sensors.csv"].size == #csv)
assert(by_name["sensors.csv"].custom.format == "csv" and by_name["sensors.csv"].custom.rows == 2)
assert(by_name["readme.md"].custom.author == "jo")
assert(by_name["readme.md"].mime_type == "text/markdown")

-- "" means the current session
assert(#Artifact.list("") == 3)

local user = Artifact.query({session_id = sid, type = "user_input"})
assert(#user == 2, "query by type")
local docs = Artifact.query({session_id = sid, tags = {"documentation"}})
assert(#docs == 1 and docs[1].name == "readme.md", "query by tag")
local recent = Artifact.query({session_id = sid, created_after = os.time() - 3600, limit = 5})
assert(#recent == 3, "query by time and limit")

local kinds = 0
for _ in pairs(index) do kinds = kinds + 1 end
assert(kinds == 2, "two distinct artifact types")

Session.complete(sid)
return {listed = #items, user_input = #user, docs = #docs, recent = #recent, kinds = kinds}
