-- After timeline_record_call.lua and quota_limit.lua. KEYS[1] the scope's hash, KEYS[2] the session record whose owner must be ARGV[1] ('' = no check),
-- KEYS[3] the principal's State bytes, KEYS[4] the session's grants, KEYS[5] the principal's quota overrides. ARGV[2] field, [3] and [4] the operation's values, [5] max
-- keys, [6] max bytes, [7] TTL ('' = none), [8] the principal's max bytes ('' = scope not counted),
-- [9...] the timeline record (`record_call`). `put` returns nil, or why it refused: {'scope'} or
-- {'principal', bytes the principal holds, its limit}.
local function finish(outcome, a, b, c)
  record_call(9, outcome)
  return {outcome, a, b, c}
end
local function owner()
  return redis.call('HGET', KEYS[2], 'principal') or ''
end
local function owned()
  return ARGV[1] == '' or owner() == ARGV[1]
end
local function number(v)
  local tag = string.sub(v, 1, 1)
  if tag == 'f' then return (struct.unpack('>d', v, 2)) end
  if tag == 'v' then return nil end
  return tonumber(v)
end
local function touch()
  if ARGV[7] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[7]) end
end
local function room(grow, used)
  if grow <= 0 then return nil end
  if used + grow > tonumber(ARGV[6]) then return {'scope'} end
  if ARGV[8] ~= '' then
    local held = tonumber(redis.call('GET', KEYS[3]) or '0')
    local limit = quota_limit(KEYS[5], 'state_bytes', ARGV[8])
    if held + grow > limit then return {'principal', held, limit, grow} end
  end
  return nil
end
local function charge(grow)
  if ARGV[8] ~= '' and grow ~= 0 then redis.call('INCRBY', KEYS[3], grow) end
end
local function put(field, value)
  local old = redis.call('HSTRLEN', KEYS[1], field)
  local grow = #value - old
  if old == 0 then
    grow = grow + #field
    local n = redis.call('HLEN', KEYS[1])
    if n > 0 and n - 1 >= tonumber(ARGV[5]) then return {'scope'} end
  end
  local used = tonumber(redis.call('HGET', KEYS[1], '') or '0')
  local full = room(grow, used)
  if full then return full end
  redis.call('HSET', KEYS[1], field, value, '', used + grow)
  charge(grow)
  touch()
  return nil
end
local function remove(field)
  local old = redis.call('HSTRLEN', KEYS[1], field)
  if old == 0 then return false end
  if redis.call('HLEN', KEYS[1]) <= 2 then
    charge(-tonumber(redis.call('HGET', KEYS[1], '') or '0'))
    redis.call('DEL', KEYS[1])
  else
    redis.call('HDEL', KEYS[1], field)
    redis.call('HINCRBY', KEYS[1], '', -(old + #field))
    charge(-(old + #field))
  end
  return true
end
local function refused(full)
  return finish('RESOURCE_EXHAUSTED', full[1], full[2], full[3] and (full[3] .. ' ' .. full[4]))
end
if not owned() then
  -- KEYS[4]: the session's grants. A grantee gets its level and the owner, nothing recorded or done:
  -- the coordinator checks the level and runs the operation again for the owner (ADR 0021).
  local level = redis.call('HGET', KEYS[4], ARGV[1])
  if level and owner() ~= '' then return {'GRANTEE', owner(), tonumber(level)} end
  return finish('NOT_FOUND', owner())  -- (the owner for the audit and the operator's log only)
end
