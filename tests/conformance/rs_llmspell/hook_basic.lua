-- Conformance (issue 16): registering, listing and unregistering hooks with handles.
-- Mirrors: examples/lua/hooks/hook-basic.lua (lexlapax/rs-llmspell). Agent/tool hook points have
-- no scriptpool meaning; they must still be accepted (as custom points).
-- Relies on: Hook.register(point, fn [, priority]) -> handle with :id(), :hook_point(),
-- :unregister() (true, then false); Hook.unregister(handle) -> bool; Hook.list() items with
-- name/priority/language; string ids accepted too.

local h1 = Hook.register("BeforeAgentInit", function(ctx) return "continue" end)
local h2 = Hook.register("AfterAgentInit", function(ctx) return "continue" end, "normal")
local h3 = Hook.register("BeforeToolExecution", function(ctx) return "continue" end, "normal")

local id1 = h1:id()
assert(type(id1) == "string" and #id1 > 0, "handle:id() is a string")
assert(h1:id() ~= h2:id() and h2:id() ~= h3:id(), "ids are distinct")
assert(h1:hook_point() == "BeforeAgentInit")

local listed = Hook.list()
assert(#listed >= 3, "the three hooks are listed")
for _, info in ipairs(listed) do
  assert(type(info.name) == "string")
  assert(type(info.priority) == "string")
  assert(type(info.language) == "string")
end

assert(h1:unregister() == true, "first unregister succeeds")
assert(Hook.unregister(h2) == true, "Hook.unregister takes the handle")
assert(h1:unregister() == false, "second unregister reports false")
assert(Hook.unregister(h2) == false, "and so does Hook.unregister")
assert(#Hook.list() == #listed - 2)

-- the id string is still accepted where a handle is
local id3 = h3:id()
assert(Hook.unregister(id3) == true)
assert(#Hook.list() == #listed - 3)

return {first_id = id1, before = #listed, after = #Hook.list()}
