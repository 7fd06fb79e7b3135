-- Conformance (issue 16): saving, loading, updating and deleting global state, with tables
-- round-tripped through JSON as rs-llmspell scripts do.
-- Mirrors: examples/lua/state/basic_persistence.lua and list_operations.lua
-- (lexlapax/rs-llmspell). (The agent:/workflow: scopes of scope_isolation.lua are not covered:
-- scriptpool has no such scopes yet: see the README, State.)
-- Relies on: State.save/load/delete/list_keys(scope, ...) aliases; nested tables and arrays
-- round-trip; missing keys load as nil; saving nil clears; JSON.stringify/parse.

local prefix = "conf_" .. tostring(os.time()) .. "_"
local function k(name) return prefix .. name end

State.save("global", k("app_name"), "My App")
State.save("global", k("version"), 1.0)
State.save("global", k("configured"), true)
State.save("global", k("config"), {theme = "dark", features = {assist = true, autosave = false}})
State.save("global", k("recent"), {"a.txt", "b.lua", "c.json"})

assert(State.load("global", k("app_name")) == "My App")
assert(State.load("global", k("version")) == 1.0)
assert(State.load("global", k("configured")) == true)
local config = State.load("global", k("config"))
assert(config.theme == "dark" and config.features.assist == true and config.features.autosave == false)
local recent = State.load("global", k("recent"))
assert(#recent == 3 and recent[2] == "b.lua")
assert(State.load("global", k("missing")) == nil)

State.save("global", k("version"), 1.1)
assert(State.load("global", k("version")) == 1.1)

local keys = State.list_keys("global")
local mine = 0
for _, key in ipairs(keys) do
  if key:sub(1, #prefix) == prefix then mine = mine + 1 end
end
assert(mine == 5, "list_keys shows the five keys")

State.delete("global", k("configured"))
assert(State.load("global", k("configured")) == nil)
State.save("global", k("recent"), nil)
assert(State.load("global", k("recent")) == nil, "saving nil clears the key")

-- a table stored as a JSON string and read back
State.save("global", k("snapshot"), JSON.stringify(config))
local back = JSON.parse(State.load("global", k("snapshot")))
assert(back.theme == "dark" and back.features.assist == true)

for _, name in ipairs({"app_name", "version", "config", "snapshot"}) do State.delete("global", k(name)) end
return {keys_seen = mine, theme = back.theme}
