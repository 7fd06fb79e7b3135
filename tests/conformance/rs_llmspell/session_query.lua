-- Conformance (issue 16): querying sessions with rs-llmspell's filter table.
-- Mirrors: examples/lua/session/basic.lua step 8 (Session.list{tags, status, limit}) and the
-- status/custom_metadata reads in examples/lua/session/advanced_patterns.lua (lexlapax/rs-llmspell).
-- Relies on: Session.list{status = ...} filtering; every item carries `status`, `custom_metadata`,
-- `name`, `id`; limit honoured.

local tag = "conf-q-" .. tostring(os.time())
local ids = {}
for i = 1, 3 do
  ids[i] = Session.create({name = "worker " .. i, tags = {tag}, metadata = {index = i}})
end
Session.suspend(ids[2])
Session.complete(ids[3])

local active = Session.list({tags = {tag}, status = "active"})
assert(#active == 1, "one active session with the tag")
assert(active[1].id == ids[1] and active[1].status == "active")
assert(active[1].custom_metadata.index == 1)

local suspended = Session.list({tags = {tag}, status = "suspended"})
assert(#suspended == 1 and suspended[1].id == ids[2] and suspended[1].status == "suspended")

local completed = Session.list({tags = {tag}, status = "completed"})
assert(#completed == 1 and completed[1].status == "completed")

local all = Session.list({tags = {tag}})
assert(#all == 3, "no status filter: all three")
for _, s in ipairs(all) do
  assert(type(s.name) == "string" and s.name:match("^worker %d$"))
  assert(s.status == "active" or s.status == "suspended" or s.status == "completed")
end

local limited = Session.list({tags = {tag}, limit = 2})
assert(#limited == 2, "limit is honoured")

local ok = pcall(Session.list, {status = "sleeping"})
assert(not ok, "an unknown status value is refused")

return {active = #active, suspended = #suspended, completed = #completed, all = #all}
