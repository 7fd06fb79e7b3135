-- After state_prelude.lua. Integer + integer is HINCRBY (exact, refuses to overflow); anything involving a float is a double.
local field, by = ARGV[2], ARGV[3]
local cur = redis.call('HGET', KEYS[1], field)
if not cur then
  local full = put(field, by)
  if full then return refused(full) end
  return finish('OK', by)
end
if string.sub(cur, 1, 1) == 'v' then return finish('FAILED_PRECONDITION', 'not_a_number', cur) end
if string.sub(cur, 1, 1) ~= 'f' and string.sub(by, 1, 1) ~= 'f' then
  local r = redis.pcall('HINCRBY', KEYS[1], field, by)
  if type(r) == 'table' and r.err then return finish('FAILED_PRECONDITION', 'overflow', cur) end
  local new = redis.call('HGET', KEYS[1], field)
  local grow, used = #new - #cur, tonumber(redis.call('HGET', KEYS[1], '') or '0')
  local full = room(grow, used)
  if full then
    redis.call('HSET', KEYS[1], field, cur)  -- undone: nothing written
    return refused(full)
  end
  redis.call('HSET', KEYS[1], '', used + grow)
  charge(grow)
  touch()
  return finish('OK', new)
end
local new = 'f' .. struct.pack('>d', number(cur) + number(by))
local full = put(field, new)
if full then return refused(full) end
return finish('OK', new)
