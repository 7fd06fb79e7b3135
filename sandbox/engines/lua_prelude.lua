-- The Lua side of the sandbox. Loaded into a fresh lupa runtime (in the spare child, before its job
-- arrives), it receives the host functions as arguments (never as globals), builds the script's
-- environment from an allowlist and returns `run(source, inputs, cpu_budget_s, random_seed,
-- clock_offset, replay, reads, most_reads)`, which applies the job's settings, installs the CPU
-- budget hook and runs the script, once.
--
-- Limits: any limit hit sets `limit_hit` and raises SENTINEL. The pcall/xpcall/coroutine wrappers
-- re-raise while `limit_hit` is set, so a script cannot swallow a limit by catching errors.
local host_call, host_print, catalog, aliases, hook_every = ...

local raw_pcall, raw_xpcall, raw_error, raw_load = pcall, xpcall, error, load
local raw_select, raw_type, raw_tostring, raw_setmetatable = select, type, tostring, setmetatable
local raw_pairs, raw_ipairs, raw_getmetatable = pairs, ipairs, getmetatable
local co_create, co_resume, co_close = coroutine.create, coroutine.resume, coroutine.close
local tpack, tunpack, tconcat, tremove, tinsert = table.pack, table.unpack, table.concat, table.remove, table.insert
local clock = os.clock
local sethook, traceback, true_getmetatable = debug.sethook, debug.traceback, debug.getmetatable
local str_find, str_sub, str_byte, raw_dump = string.find, string.sub, string.byte, string.dump

python = nil -- lupa's bridge to Python objects: never reachable, not even from the prelude's _G
package.loaded.python = nil

local limit_hit = nil
-- Every metatable the prelude owns carries `__metatable`, so getmetatable never hands the table to
-- a script and setmetatable cannot replace it: a script could otherwise add a __gc to one, and every
-- object the prelude later gives that metatable would be finalized outside the CPU budget.
local SENTINEL = raw_setmetatable({}, { __tostring = function() return "limit exceeded" end, __metatable = false })
local MEMORY_MESSAGE = "not enough memory"

local function hit(kind)
  limit_hit = limit_hit or kind
  raw_error(SENTINEL, 0)
end

-- The CPU budget hook. Lua keeps a debug.sethook function per coroutine, so every coroutine the
-- script creates gets it installed too (see new_coroutine).
local deadline = math.huge
local function budget_hook()
  if limit_hit or clock() > deadline then hit(limit_hit or "cpu") end
end

local function new_coroutine(f)
  local co = co_create(f)
  sethook(co, budget_hook, "", hook_every)
  return co
end

-- Re-raise after any protected call while a limit is set; treat an out-of-memory error as the limit.
local function recheck(ok, ...)
  if limit_hit then raw_error(SENTINEL, 0) end
  if not ok and (...) == MEMORY_MESSAGE then hit("memory") end
  return ok, ...
end

-- Errors from global calls: a table with `code` and `message`, printing as "CODE: message".
local ERROR_MT = {
  __tostring = function(e) return e.code .. ": " .. e.message end,
  __metatable = false,
}

local function raise_call_error(code, message)
  raw_error(raw_setmetatable({ code = code, message = message }, ERROR_MT), 0)
end

-- ------------------------------------------------------------------ the environment
local env = {}
local function copy(src, names)
  local t = {}
  for _, name in raw_ipairs(names) do t[name] = src[name] end
  return t
end

for _, name in raw_ipairs({
  "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
  "rawequal", "rawget", "rawlen", "rawset", "getmetatable",
}) do
  env[name] = _G[name]
end
env._VERSION = _VERSION

-- Lua 5.4 runs __gc finalizers with debug hooks switched off, so no budget could stop a loop in
-- one. An object is only finalized if its metatable had __gc when setmetatable was called, so
-- refusing such metatables here means script code never runs unhooked.
local raw_rawget = rawget
env.setmetatable = function(t, mt)
  if raw_type(mt) == "table" and raw_rawget(mt, "__gc") ~= nil then
    raw_error("setmetatable: __gc finalizers are not allowed in the sandbox", 2)
  end
  return raw_setmetatable(t, mt)
end

string.dump = nil -- the real string table is every string's __index: remove it there, not in a copy
raw_getmetatable("").__metatable = false -- strings' metatable: neither reachable nor replaceable

-- A memory error is raised past the script's own code only where the prelude can see it (pcall,
-- xpcall, coroutines and load are wrapped below), except in a to-be-closed variable's __close
-- handler, which receives the error and can replace it by raising another. Lua cannot refuse that
-- handler once the variable exists, so chunks that declare `<close>` variables are refused: the
-- compiled function and every nested one are scanned for the opcode that declares one (OP_TBC).
-- Only chunks whose text holds "close" can declare one (an attribute name is never escaped).
local OP_TBC = 55
local DUMP_HEADER_BYTES = 32 -- Lua 5.4's dump header (31 bytes) and the main function's upvalue count
local function declares_close(fn)
  local dump = raw_dump(fn, true)
  local pos = DUMP_HEADER_BYTES + 1
  local function size()
    local n, b = 0, 0
    repeat
      b = str_byte(dump, pos)
      pos = pos + 1
      n = n * 128 + (b & 0x7f)
    until b >= 0x80
    return n
  end
  local function skip_string()
    local n = size()
    if n > 0 then pos = pos + n - 1 end
  end
  local function scan()
    skip_string() -- source (stripped)
    size() size() -- first and last line
    pos = pos + 3 -- parameters, vararg flag, stack size
    local code = size()
    for at = pos, pos + 4 * (code - 1), 4 do
      if str_byte(dump, at) & 0x7f == OP_TBC then return true end
    end
    pos = pos + 4 * code
    for _ = 1, size() do -- constants
      local tag = str_byte(dump, pos)
      pos = pos + 1
      if tag == 0x03 or tag == 0x13 then pos = pos + 8 -- integer, float
      elseif tag == 0x04 or tag == 0x14 then skip_string() end -- short, long string
    end
    local upvalues = size() -- (read before `pos` is: size() moves it)
    pos = pos + 3 * upvalues -- their descriptions
    for _ = 1, size() do
      if scan() then return true end
    end
    size() size() size() size() -- debug information (stripped: four empty lists)
    return false
  end
  return scan()
end
local CLOSE_REFUSED = "to-be-closed variables (<close>) are not allowed in the sandbox"
local function refuses_close(text, fn)
  return str_find(text, "close", 1, true) ~= nil and declares_close(fn)
end
env.string = string
env.table = copy(table, { "concat", "insert", "move", "pack", "remove", "sort", "unpack" })
env.math = copy(math, {
  "abs", "ceil", "cos", "deg", "exp", "floor", "fmod", "huge", "log", "max", "maxinteger", "min",
  "mininteger", "modf", "pi", "rad", "random", "randomseed", "sin", "sqrt", "tan", "tointeger",
  "type", "ult", "atan", "asin", "acos",
})
env.utf8 = copy(utf8, { "char", "charpattern", "codepoint", "codes", "len", "offset" })
env.os = copy(os, { "clock", "date", "difftime", "time" })
-- The script's clocks (sandbox/script_clock.py has the rule): each read is recorded, up to
-- max_clock_reads, and a replay gives the recorded job's reads back first; os.time() is shifted to
-- the recorded job's start in a replay.
local clock_offset, clock_replay, clock_reads, clock_count, max_clock_reads = 0, nil, nil, 0, 0
local function read_clock(real)
  clock_count = clock_count + 1
  local value = real
  if clock_replay ~= nil and clock_replay[clock_count] ~= nil then value = clock_replay[clock_count] end
  if clock_reads ~= nil and clock_count <= max_clock_reads then clock_reads[clock_count] = value end
  return value
end
do
  local os_time, os_date, floor = os.time, os.date, math.floor
  env.os.time = function(t)
    if t == nil then return floor(read_clock(os_time() + clock_offset)) end
    return os_time(t)
  end
  env.os.date = function(format, t) return os_date(format, t or env.os.time()) end
  env.os.clock = function() return read_clock(clock()) end
end
env.unpack = tunpack

env.pcall = function(f, ...) return recheck(raw_pcall(f, ...)) end
env.xpcall = function(f, handler, ...)
  local guarded = function(e)
    if limit_hit or e == MEMORY_MESSAGE then return e end
    return handler(e)
  end
  return recheck(raw_xpcall(f, guarded, ...))
end

env.coroutine = copy(coroutine, { "isyieldable", "running", "status", "yield" })
env.coroutine.create = new_coroutine
env.coroutine.resume = function(co, ...) return recheck(co_resume(co, ...)) end
env.coroutine.close = function(co) return recheck(co_close(co)) end
env.coroutine.wrap = function(f)
  local co = new_coroutine(f)
  return function(...)
    local r = tpack(recheck(co_resume(co, ...)))
    if not r[1] then raw_error(r[2], 0) end
    return tunpack(r, 2, r.n)
  end
end

env.collectgarbage = function(opt, ...)
  opt = opt or "collect"
  if opt ~= "collect" and opt ~= "count" and opt ~= "step" then
    raw_error("collectgarbage: only 'collect', 'count' and 'step' are allowed in the sandbox", 2)
  end
  return collectgarbage(opt, ...)
end

env.load = function(chunk, name, mode, chunk_env)
  if raw_type(chunk) ~= "string" then
    return nil, "load: only source strings are allowed in the sandbox"
  end
  if mode ~= nil and mode ~= "t" then
    return nil, "load: only text chunks are allowed in the sandbox (mode 't')"
  end
  local fn, err = raw_load(chunk, "=load", "t", chunk_env or env)
  if fn == nil and err == MEMORY_MESSAGE then hit("memory") end
  if fn ~= nil and refuses_close(chunk, fn) then return nil, "load: " .. CLOSE_REFUSED end
  return fn, err
end

env.print = function(...)
  local n = raw_select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = raw_tostring((raw_select(i, ...))) end
  if not host_print(tconcat(parts, "\t") .. "\n") then hit("output") end
end

-- A Lua table cannot hold nil, so `null` stands for "no value" where one must be passed
-- (e.g. Session.updateMetadata(id, {key = null}) removes key). It crosses the bridge as null/None.
env.null = raw_setmetatable({ __scriptpool_null = true }, {
  __newindex = function() raw_error("null is read-only", 2) end,
  __tostring = function() return "null" end,
  __metatable = false,
})
env._G = env

-- ------------------------------------------------------------------ globals
local function finish_call(status, a, b)
  if status == "ok" then return a end
  if status == "limit" then hit(a) end
  raise_call_error(a, b)
end

-- Event.on / Hook.register callbacks: kept here, run after each later global call returns, with
-- every matching event that has arrived by then (subscription + Event.receive, or Hook.receive for a
-- hook, on the wire). `handlers` is kept in priority order (lowest value first, then registration
-- order; Event.on callbacks are "normal", 0). Delivery goes in rounds, each giving every handler
-- that still has events its next one: an event several hooks receive reaches them in priority order.
local handlers = {}
local delivering = false

local function next_event(h)
  if h.hook then return finish_call(host_call("Hook.receive", tpack(h.id))) end
  return finish_call(host_call("Event.receive", tpack(h.id, 0)))
end

local function deliver()
  delivering = true
  local round = { tunpack(handlers) }
  while round[1] ~= nil do
    local again = {}
    for _, h in raw_ipairs(round) do
      if h.active then
        local e = next_event(h)
        if e ~= nil then
          again[#again + 1] = h
          local ok, err = raw_pcall(h.fn, e)
          if not ok then delivering = false raw_error(err, 0) end
        end
      end
    end
    round = again
  end
  delivering = false
end

local function call(op, ...)
  local result = finish_call(host_call(op, tpack(...)))
  if handlers[1] ~= nil and not delivering then deliver() end
  return result
end

local SessionMethods = {}
local SessionObject = { __index = SessionMethods, __metatable = false }

local function to_session(t)
  if raw_type(t) ~= "table" then return t end
  return raw_setmetatable(t, SessionObject)
end

local function to_session_list(list)
  if raw_type(list) ~= "table" then return list end
  for i, s in raw_ipairs(list) do list[i] = to_session(s) end
  return list
end

-- Artifact.store/update/storeFile return the artifact's id, a plain string: #id, id:sub(), ..,
-- == with the id string, returning it from the job and using it as a table key all act on the id.
-- It also answers .id, .content_hash, .session_id and .version (as the job's latest store or update
-- of that artifact left them) through the strings' metatable: any other key of a string is looked
-- up in the string library as before. Only artifacts this job stored are known here.
local artifact_refs = {}
do
  local string_methods = true_getmetatable("").__index
  true_getmetatable("").__index = function(s, key)
    local method = string_methods[key]
    if method ~= nil then return method end
    local ref = artifact_refs[s]
    if ref ~= nil then return ref[key] end
    return nil
  end
end

local function to_artifact_ref(t)
  if raw_type(t) ~= "table" or raw_type(t.id) ~= "string" then return t end
  if t.sequence == nil then t.sequence = t.version end -- rs-llmspell scripts print .sequence
  artifact_refs[t.id] = t
  return t.id
end

-- Artifact.get leaves large content out; reading `.content` fetches it once (Artifact.getContent).
local raw_rawset = rawset
local LazyArtifact = {
  __index = function(self, key)
    if key ~= "content" then return nil end
    local content = call("Artifact.getContent", self.session_id, self.id, self.version)
    raw_rawset(self, "content", content)
    return content
  end,
  __metatable = false,
}

local function to_artifact(t)
  if raw_type(t) ~= "table" or raw_rawget(t, "content") ~= nil then return t end
  return raw_setmetatable(t, LazyArtifact)
end

-- Paged operations answer {items, next_cursor}: the script gets the items as its list, with
-- `list.next_cursor` (through the list's metatable, so `#`, ipairs and returning the list are as
-- for any list) when more remain; passing it back as `cursor` gives the next page.
local function to_page(convert)
  return function(page)
    if raw_type(page) ~= "table" or raw_type(raw_rawget(page, "items")) ~= "table" then return page end
    local items = raw_rawget(page, "items")
    if convert then items = convert(items) end
    local cursor = raw_rawget(page, "next_cursor")
    if cursor ~= nil then
      raw_setmetatable(items, { __index = { next_cursor = cursor }, __metatable = false })
    end
    return items
  end
end

local post = {
  ["Artifact.get"] = to_artifact,
  ["Session.get"] = to_session,
  ["Session.list"] = to_page(to_session_list),
  ["Session.getTimeline"] = to_page(),
  ["Artifact.list"] = to_page(),
  ["Artifact.query"] = to_page(),
  ["Artifact.findByType"] = to_page(),
  ["Artifact.findByTag"] = to_page(),
  ["Artifact.search"] = to_page(),
  ["Session.load"] = to_session,
  ["Artifact.store"] = to_artifact_ref,
  ["Artifact.update"] = to_artifact_ref,
  ["Artifact.storeFile"] = to_artifact_ref,
}

local LOCKED = { __metatable = false } -- the globals' tables: their fields are the script's, their metatable not
for global_name, ops in raw_pairs(catalog) do
  local g = {}
  for _, op in raw_ipairs(ops) do
    local full = global_name .. "." .. op
    local after = post[full]
    if after then
      g[op] = function(...) return after(call(full, ...)) end
    else
      g[op] = function(...) return call(full, ...) end
    end
  end
  for alias, op in raw_pairs(aliases[global_name] or {}) do g[alias] = g[op] end
  env[global_name] = raw_setmetatable(g, LOCKED)
end

local Session = env.Session

-- JSON.stringify(v) / JSON.parse(s): run by the host in this process (sandbox/engines/lua_json.py),
-- no global call.
env.JSON = raw_setmetatable({
  stringify = function(v) return finish_call(host_call("JSON.stringify", tpack(v))) end,
  parse = function(s) return finish_call(host_call("JSON.parse", tpack(s))) end,
}, LOCKED)
local Event, Hook = env.Event, env.Hook

local function check_callback(kind, fn)
  if raw_type(fn) ~= "function" then raise_call_error("INVALID_ARGUMENT", kind .. ": the callback must be a function") end
end

local function add_handler(h)
  local at = #handlers + 1
  for i, other in raw_ipairs(handlers) do
    if other.priority > h.priority then at = i break end
  end
  tinsert(handlers, at, h)
  return h
end

local function drop_handler(id)
  for i, h in raw_ipairs(handlers) do
    if h.id == id then h.active = false tremove(handlers, i) return true end
  end
  return false
end

Event.on = function(pattern, fn)
  check_callback("Event.on", fn)
  local id = call("Event.on", pattern)
  add_handler({ id = id, fn = fn, hook = false, priority = 0, active = true })
  return id
end
local hook_records = raw_setmetatable({}, { __mode = "k", __metatable = false }) -- hook handle -> its handler
local wire_unsubscribe = Event.unsubscribe
Event.unsubscribe = function(id)
  if raw_type(id) == "table" and hook_records[id] ~= nil then id = hook_records[id].id end
  drop_handler(id)
  return wire_unsubscribe(id)
end

-- Hook.register returns a handle (rs-llmspell's): h:id(), h:hook_point() (both raise once the hook
-- is unregistered) and h:unregister() (true the first time, false after). It prints and
-- concatenates as its id and has the field hook_id; Hook.unregister takes it or the id string.
local HookMethods = {}
local HookHandle = {
  __index = HookMethods,
  __tostring = function(h) return raw_rawget(h, "hook_id") end,
  __concat = function(a, b) return raw_tostring(a) .. raw_tostring(b) end,
  __metatable = false,
}
local function live_record(handle)
  local rec = hook_records[handle]
  if rec == nil or not rec.active then raise_call_error("FAILED_PRECONDITION", "hook already unregistered") end
  return rec
end
function HookMethods:id() return live_record(self).id end
function HookMethods:hook_point() return live_record(self).what end
function HookMethods:unregister() return Hook.unregister(self) end
HookMethods.hookPoint = HookMethods.hook_point

local wire_register = Hook.register
Hook.register = function(point, fn, priority)
  check_callback("Hook.register", fn)
  local info = wire_register(point, priority)
  local rec = add_handler({ id = info.hook_id, what = info.hook_point, fn = fn, hook = true,
                            priority = info.priority_value, active = true })
  local handle = raw_setmetatable({ hook_id = info.hook_id }, HookHandle)
  hook_records[handle] = rec
  return handle
end
local wire_unregister = Hook.unregister
Hook.unregister = function(hook)
  local id
  if raw_type(hook) == "string" then
    id = hook
  elseif raw_type(hook) == "table" and hook_records[hook] ~= nil then
    id = hook_records[hook].id
  else
    return false
  end
  for _, h in raw_ipairs(handlers) do
    if h.id == id and h.hook then drop_handler(id) break end
  end
  return wire_unregister(id)
end
for alias, op in raw_pairs(aliases.Event or {}) do Event[alias] = Event[op] end
for alias, op in raw_pairs(aliases.Hook or {}) do Hook[alias] = Hook[op] end

-- Session.replay(id, {speed, on_progress = fn, on_hook = fn}): the callbacks run here, in the calling
-- script, as the replay advances (the worker waits for new replay timeline entries between calls).
local function follow_replay(replay_id, on_progress, on_hook)
  local after = ""
  while true do
    local batch = call("Session.awaitReplay", replay_id, after)
    for _, e in raw_ipairs(batch.entries) do
      after = e.id
      if e.type == "replay.progress" then
        if on_progress then on_progress(e.data.progress) end
      elseif e.hook and on_hook then
        on_hook({ hook_point = e.type, session_id = replay_id, job_id = e.job_id, data = e.data,
                  timestamp = e.timestamp, timestamp_unix = e.timestamp_unix })
      end
    end
    if batch.finished then return end
  end
end

Session.replay = function(id, opts)
  local plain, on_progress, on_hook = {}, nil, nil
  if raw_type(opts) == "table" then
    for k, v in raw_pairs(opts) do
      if k == "on_progress" then on_progress = v elseif k == "on_hook" then on_hook = v else plain[k] = v end
    end
  end
  local replay_id = call("Session.replay", id, plain)
  if on_progress or on_hook then follow_replay(replay_id, on_progress, on_hook) end
  return replay_id
end
function SessionMethods:suspend() return Session.suspend(self.id) end
function SessionMethods:resume() return Session.resume(self.id) end
function SessionMethods:complete() return Session.complete(self.id) end
function SessionMethods:save() return Session.save(self.id) end
function SessionMethods:hasTag(tag)
  for _, t in raw_ipairs(self.tags or {}) do
    if t == tag then return true end
  end
  return false
end
-- addTag/removeTag start from the session's current tags (not this object's possibly stale copy).
function SessionMethods:addTag(tag)
  local tags = Session.getTags(self.id)
  for _, t in raw_ipairs(tags) do
    if t == tag then self.tags = tags return tags end
  end
  tags[#tags + 1] = tag
  self.tags = Session.setTags(self.id, tags)
  return self.tags
end
function SessionMethods:removeTag(tag)
  local tags = {}
  for _, t in raw_ipairs(Session.getTags(self.id)) do
    if t ~= tag then tags[#tags + 1] = t end
  end
  self.tags = Session.setTags(self.id, tags)
  return self.tags
end
SessionMethods.add_tag = SessionMethods.addTag
SessionMethods.remove_tag = SessionMethods.removeTag
SessionMethods.has_tag = SessionMethods.hasTag

-- ------------------------------------------------------------------ files
-- The job's own files (sandbox/scratch_files.py): its scratch directory is its root, seen as "/".
-- io.open, io.lines, io.type, file:read/write/lines/seek/flush/setvbuf/close, os.remove and os.rename
-- as in standard Lua. io.open, os.remove and os.rename report a failure as Lua does (nil, message,
-- code; the message is "CODE: text"); file methods raise the error (a table with code and message).
-- io.write prints (without a newline). Files left open are closed when the job ends.
local str_format, math_type = string.format, math.type
local function written(v, what, i) -- what file:write and io.write write for a value (as Lua does)
  if raw_type(v) == "number" then return math_type(v) == "integer" and str_format("%d", v) or str_format("%.14g", v) end
  if raw_type(v) ~= "string" then
    raise_call_error("INVALID_ARGUMENT", what .. ": argument #" .. i .. " must be a string or a number")
  end
  return v
end
local function file_call(op, ...)
  return finish_call(host_call(op, tpack(...)))
end
local function try_file_call(op, ...)
  local status, a, b = host_call(op, tpack(...))
  if status == "ok" then return a end
  if status == "limit" then hit(a) end
  return nil, a .. ": " .. b, a
end

local handle_of = raw_setmetatable({}, { __mode = "k", __metatable = false })
local FileMethods = {}
local FileObject = {
  __index = FileMethods,
  __name = "FILE*",
  __tostring = function(f)
    local h = handle_of[f]
    return h and ("file (" .. h.path .. ")") or "file (closed)"
  end,
  __metatable = false,
}

local function open_handle(f, what)
  local h = raw_type(f) == "table" and handle_of[f] or nil
  if h == nil or h.id == nil then raise_call_error("INVALID_ARGUMENT", what .. ": attempt to use a closed file") end
  return h
end

local function read_formats(h, ...)
  local n = raw_select("#", ...)
  if n == 0 then return file_call("File.read", h.id, "l") end
  local out = {}
  for i = 1, n do
    local fmt = raw_select(i, ...)
    local v = file_call("File.read", h.id, fmt)
    out[i] = v
    if v == nil then return tunpack(out, 1, i) end
  end
  return tunpack(out, 1, n)
end

function FileMethods:read(...) return read_formats(open_handle(self, "read"), ...) end
function FileMethods:write(...)
  local h = open_handle(self, "write")
  for i = 1, raw_select("#", ...) do
    file_call("File.write", h.id, written((raw_select(i, ...)), "write", i))
  end
  return self
end
function FileMethods:lines(...)
  local h = open_handle(self, "lines")
  local formats = tpack(...)
  return function()
    if h.id == nil then raise_call_error("INVALID_ARGUMENT", "lines: file is already closed") end
    return read_formats(h, tunpack(formats, 1, formats.n))
  end
end
function FileMethods:seek(whence, offset)
  return file_call("File.seek", open_handle(self, "seek").id, whence or "cur", offset or 0)
end
function FileMethods:flush()
  file_call("File.flush", open_handle(self, "flush").id)
  return self
end
function FileMethods:setvbuf() open_handle(self, "setvbuf") return true end
function FileMethods:close()
  local h = open_handle(self, "close")
  local id = h.id
  h.id = nil
  handle_of[self] = nil
  file_call("File.close", id)
  return true
end

local function wrap_file(id, path)
  local f = raw_setmetatable({}, FileObject)
  handle_of[f] = { id = id, path = raw_tostring(path) }
  return f
end

local VALID_MODE = "^[rwax]%+?b?$"
local io_env = {}
io_env.open = function(path, mode)
  mode = mode or "r"
  if raw_type(mode) ~= "string" or not str_find(mode, VALID_MODE) then
    raise_call_error("INVALID_ARGUMENT", "io.open: invalid mode " .. raw_tostring(mode) .. " (use r, w, a, r+, w+ or a+)")
  end
  local id, message, code = try_file_call("File.open", path, mode)
  if id == nil then return nil, message, code end
  return wrap_file(id, path)
end
io_env.lines = function(path, ...)
  if path == nil then raise_call_error("INVALID_ARGUMENT", "io.lines: a file name is required (there is no stdin)") end
  local f = wrap_file(file_call("File.open", path, "r"), path)
  local h = handle_of[f]
  local formats = tpack(...)
  return function()
    if h.id == nil then return nil end
    local v = read_formats(h, tunpack(formats, 1, formats.n))
    if v == nil then f:close() end
    return v
  end
end
io_env.type = function(obj)
  if raw_type(obj) ~= "table" or true_getmetatable(obj) ~= FileObject then return nil end
  return handle_of[obj] and "file" or "closed file"
end
io_env.write = function(...)
  local n = raw_select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = written((raw_select(i, ...)), "io.write", i) end
  if not host_print(tconcat(parts)) then hit("output") end
  return io_env
end
env.io = raw_setmetatable(io_env, LOCKED)
env.os.remove = function(path)
  local ok, message, code = try_file_call("File.remove", path)
  if ok == nil then return nil, message, code end
  return true
end
env.os.rename = function(old, new)
  local ok, message, code = try_file_call("File.rename", old, new)
  if ok == nil then return nil, message, code end
  return true
end

-- ------------------------------------------------------------------ running
local function script_traceback(e)
  if e == SENTINEL or limit_hit then return e end
  local tb = traceback("", 2) or ""
  local kept = {}
  local start = 1
  while true do
    local s, f = str_find(tb, "\n", start, true)
    local line = str_sub(tb, start, (s or 0) - 1)
    if str_find(line, "script:", 1, true) then kept[#kept + 1] = line end
    if not s then break end
    start = f + 1
  end
  return { error = e, traceback = tconcat(kept, "\n") }
end

local function describe_error(info)
  if info == MEMORY_MESSAGE then return "limit", "memory" end
  if raw_type(info) == "table" and info.error ~= nil then
    if info.error == MEMORY_MESSAGE then return "limit", "memory" end
    local e = info.error
    if raw_type(e) == "table" and true_getmetatable(e) == ERROR_MT then
      return "error", e.code .. ": " .. e.message, info.traceback
    end
    return "error", raw_tostring(e), info.traceback
  end
  return "error", raw_tostring(info), ""
end

-- Returns ("ok", n, values...) | ("error", message_or_value, traceback) | ("limit", kind)
local used = false
return function(source, inputs, cpu_budget_s, random_seed, offset, replay, reads, most_reads)
  if used then return "error", "this sandbox already ran a script", "" end
  used = true
  -- Forked children share the parent's state: seed each job's generator from its own seed.
  math.randomseed(random_seed)
  clock_offset, clock_replay, clock_reads, max_clock_reads = offset, replay, reads, most_reads
  env.INPUT = inputs
  local fn, syntax_error = raw_load(source, "=script", "t", env)
  if not fn then
    if syntax_error == MEMORY_MESSAGE then return "limit", "memory" end
    return "syntax", syntax_error
  end
  if refuses_close(source, fn) then return "error", CLOSE_REFUSED, "" end
  deadline = clock() + cpu_budget_s
  sethook(budget_hook, "", hook_every)
  -- The hook stays on after the script returns: error formatting may run the script's __tostring.
  local r = tpack(raw_xpcall(fn, script_traceback))
  if limit_hit then return "limit", limit_hit end
  if not r[1] then
    -- Formatting runs the script's own __tostring: protect it, and re-check the limits after.
    local formatted = tpack(raw_pcall(describe_error, r[2]))
    if limit_hit then return "limit", limit_hit end
    if not formatted[1] then
      if formatted[2] == MEMORY_MESSAGE then return "limit", "memory" end
      return "error", "error object could not be converted to a string", ""
    end
    return tunpack(formatted, 2, formatted.n)
  end
  return "ok", r.n - 1, tunpack(r, 2, r.n)
end
