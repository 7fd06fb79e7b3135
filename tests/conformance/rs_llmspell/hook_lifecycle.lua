-- Conformance (issue 16): hooks over a session's life, handle behaviour after unregistering,
-- and rs-llmspell callback return values being accepted.
-- Mirrors: examples/lua/hooks/hook-lifecycle.lua and hook-error-handling.lua
-- (lexlapax/rs-llmspell); scriptpool lifecycle points stand in for the agent lifecycle.
-- Relies on: handles (and priority) on scriptpool's own points; return values "continue",
-- {type = "modified", data = ...} and nil all accepted; h:id() raises once unregistered;
-- Hook.unregister(non-handle) -> false; workflow points accepted.

local seen = {}
local created = Hook.register("session.created", function(ctx)
  seen[#seen + 1] = "created:" .. tostring(ctx.session_id)
  return "continue"
end, "high")
local suspended = Hook.register("session.suspended", function(ctx)
  seen[#seen + 1] = "suspended"
  return {type = "modified", data = {note = "seen"}}
end)
local completed = Hook.register("session.completed", function(ctx)
  seen[#seen + 1] = "completed"
end, "low")
local wf = Hook.register("BeforeWorkflowStart", function(ctx) return "continue" end, "lowest")
assert(wf:hook_point() == "BeforeWorkflowStart")

local sid = Session.create({name = "hooked"})
Session.suspend(sid)
Session.resume(sid)
Session.complete(sid)
Session.getCurrent() -- a later call: pending callbacks run

assert(seen[1] == "created:" .. sid, "session.created fired with the session id")
assert(seen[2] == "suspended" and seen[3] == "completed")

for _, h in ipairs({created, suspended, completed, wf}) do
  assert(h:unregister() == true)
end
local ok = pcall(function() return created:id() end)
assert(not ok, "id() of an unregistered handle raises")
assert(Hook.unregister({}) == false, "a non-handle is refused with false")

local count = #seen
Session.complete(Session.create({name = "after"}))
Session.getCurrent()
assert(#seen == count, "no callbacks after unregistering")
return seen
