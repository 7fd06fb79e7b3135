-- Conformance (issue 16): the five priority levels, listing by point and by priority, and the
-- order callbacks run in.
-- Mirrors: examples/lua/hooks/hook-priorities.lua and hook-filtering-listing.lua
-- (lexlapax/rs-llmspell). There the agent run fires BeforeAgentExecution; here the script emits the
-- point itself (issue 16: rs points "fire when a script or client emits them").
-- Relies on: priority strings highest/high/normal/low/lowest order callbacks (highest first);
-- Hook.list(point) and Hook.list{priority = ...} filter; callbacks get ctx.data.

local order = {}
local handles = {}
for _, level in ipairs({"low", "highest", "normal", "lowest", "high"}) do
  handles[level] = Hook.register("BeforeAgentExecution", function(ctx)
    order[#order + 1] = level
    assert(type(ctx) == "table" and type(ctx.data) == "table", "callback receives a context table")
    return "continue"
  end, level)
end
local tool = Hook.register("BeforeToolExecution", function(ctx) return "continue" end, "high")

local for_point = Hook.list("BeforeAgentExecution")
assert(#for_point == 5, "filter by hook point")
local high = Hook.list({priority = "high"})
assert(#high == 2, "filter by priority: the agent hook and the tool hook")
assert(#Hook.list({priority = "lowest"}) == 1)
assert(#Hook.list({language = "lua"}) >= 6)

-- fire the point with plain values instead of an agent run
Event.publish("BeforeAgentExecution", {agent = "summarizer", input = "plain text"})
State.load("global", "conformance_flush") -- any later global call lets pending callbacks run

assert(#order == 5, "every callback ran once")
local expected = {"highest", "high", "normal", "low", "lowest"}
for i = 1, 5 do
  assert(order[i] == expected[i], "priority order at " .. i .. ": got " .. tostring(order[i]))
end

for _, h in pairs(handles) do h:unregister() end
tool:unregister()
assert(#Hook.list("BeforeAgentExecution") == 0)
return order
