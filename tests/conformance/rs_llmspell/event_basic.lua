-- Conformance (issue 16): subscribe, publish, receive, list and unsubscribe.
-- Mirrors: examples/lua/events/event-basic.lua and event-subscription-management.lua
-- (lexlapax/rs-llmspell).
-- Relies on: Event.subscribe -> id string; Event.publish -> true; Event.receive(sub, ms) -> event
-- with event_type and data, or nil on timeout; Event.list_subscriptions() items {id, pattern};
-- Event.unsubscribe -> true, then false for an id that is gone.

local base = #Event.list_subscriptions()
local user_sub = Event.subscribe("user.*")
local sys_sub = Event.subscribe("system.*")
assert(type(user_sub) == "string" and #user_sub > 0)

local subs = Event.list_subscriptions()
assert(#subs == base + 2, "two new subscriptions are listed")
local patterns = {}
for _, s in ipairs(subs) do
  assert(type(s.id) == "string" and type(s.pattern) == "string")
  patterns[s.id] = s.pattern
end
assert(patterns[user_sub] == "user.*" and patterns[sys_sub] == "system.*")

assert(Event.publish("user.login", {user_id = "u123", method = "password", at = os.time()}) == true)
assert(Event.publish("system.health", {cpu = 41.5, ok = true}) == true)
assert(Event.publish("billing.invoice", {amount = 10}) == true) -- matches neither

local e = Event.receive(user_sub, 1000)
assert(e ~= nil, "user event received")
assert(e.event_type == "user.login", "received events carry event_type")
assert(e.data.user_id == "u123" and e.data.method == "password")
assert(e.timestamp ~= nil)

local s = Event.receive(sys_sub, 1000)
assert(s and s.event_type == "system.health" and s.data.ok == true and s.data.cpu == 41.5)

assert(Event.receive(user_sub, 100) == nil, "nothing more: timeout gives nil")

assert(Event.unsubscribe(user_sub) == true)
assert(Event.unsubscribe(user_sub) == false, "unsubscribing twice reports false")
assert(#Event.list_subscriptions() == base + 1)
Event.unsubscribe(sys_sub)
assert(#Event.list_subscriptions() == base)

return {event_type = e.event_type, user = e.data.user_id, cpu = s.data.cpu}
