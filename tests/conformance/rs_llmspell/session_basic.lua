-- Conformance (issue 16): session lifecycle as an rs-llmspell user writes it.
-- Mirrors: examples/lua/session/basic.lua (steps 1-7, 9-10) in lexlapax/rs-llmspell.
-- Relies on: Session.create{...} -> id string; Session.get -> {id, name, status, created_at (RFC 3339),
-- tags, custom_metadata, parent_session_id}; status follows suspend/resume/complete.

local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d"

local sid = Session.create({
  name = "Quarterly review",
  description = "Looking at Q3 numbers",
  tags = {"review", "q3"},
  metadata = {team = "finance", owner = "ana", priority = 2},
})
assert(type(sid) == "string" and #sid == 36, "create returns a UUID string")

local s = Session.get(sid)
assert(s.id == sid)
assert(s.name == "Quarterly review")
assert(s.description == "Looking at Q3 numbers")
assert(s.status == "active", "new session has status 'active'")
assert(type(s.created_at) == "string" and s.created_at:match(ISO), "created_at is an ISO-8601 string")
assert(type(s.updated_at) == "string" and s.updated_at:match(ISO), "updated_at is an ISO-8601 string")
assert(#s.tags == 2)
assert(type(s.custom_metadata) == "table", "custom_metadata carries the user metadata")
assert(s.custom_metadata.team == "finance" and s.custom_metadata.priority == 2)

-- a child session points at its parent
local child = Session.create({name = "EMEA drill-down", parent_session_id = sid, tags = {"review"}})
assert(Session.get(child).parent_session_id == sid)

-- lifecycle: the status field follows the transitions
Session.suspend(sid)
assert(Session.get(sid).status == "suspended")
Session.resume(sid)
assert(Session.get(sid).status == "active")

Session.save(sid)

-- current-session context
local before = Session.getCurrent()
Session.setCurrent(sid)
assert(Session.getCurrent() == sid)
Session.setCurrent(before)

-- a bad id is an error the script can catch
local ok, err = pcall(Session.get, "not-a-session-id")
assert(not ok and tostring(err) ~= "", "invalid id raises")

Session.complete(child)
Session.complete(sid)
assert(Session.get(sid).status == "completed")

return {session = sid, child = child, final_status = Session.get(sid).status}
