-- Conformance (issue 16): counting published/received events per pattern and reading the
-- event system's statistics.
-- Mirrors: examples/lua/events/event-statistics.lua and the get_stats part of
-- event-basic.lua (lexlapax/rs-llmspell).
-- Relies on: Event.get_stats() -> {event_bus_stats = {...}, bridge_stats = {active_subscriptions}};
-- wildcard patterns incl. a leading "*"; event_type on received events; JSON global.

local patterns = {users = "user.*", errors = "*.error", metrics = "metrics.*"}
local subs = {}
for name, p in pairs(patterns) do subs[name] = Event.subscribe(p) end

local stats0 = Event.get_stats()
assert(type(stats0) == "table" and type(stats0.event_bus_stats) == "table")
assert(type(stats0.bridge_stats) == "table")
assert(type(stats0.bridge_stats.active_subscriptions) == "number")
assert(stats0.bridge_stats.active_subscriptions >= 3)

local events = {
  {"user.login", {user = "u1"}},
  {"user.error", {code = "E2"}},
  {"app.error", {code = "E1", message = "db down"}},
  {"metrics.latency", {ms = 245}},
  {"metrics.rate", {rps = 1250}},
}
local published, bytes = 0, 0
for _, ev in ipairs(events) do
  if Event.publish(ev[1], ev[2]) then
    published = published + 1
    bytes = bytes + #JSON.stringify(ev[2])
  end
end
assert(published == #events)

local received, types = {}, {}
for name, id in pairs(subs) do
  received[name] = 0
  while true do
    local e = Event.receive(id, 200)
    if not e then break end
    received[name] = received[name] + 1
    types[#types + 1] = e.event_type
  end
end
assert(received.users == 2, "user.login and user.error")
assert(received.errors == 2, "*.error matches user.error and app.error")
assert(received.metrics == 2)
for _, t in ipairs(types) do assert(type(t) == "string" and t:find("%.")) end

local stats1 = Event.get_stats()
assert(type(stats1.event_bus_stats) == "table")
for _, id in pairs(subs) do Event.unsubscribe(id) end
local stats2 = Event.get_stats()
assert(stats2.bridge_stats.active_subscriptions == stats1.bridge_stats.active_subscriptions - 3)

return {published = published, received = received, json_bytes = bytes}
