-- After state_prelude.lua. Equal = the same encoding, or numerically equal when either side is a float (1 == 1.0).
local field, expected, new = ARGV[2], ARGV[3], ARGV[4]
local cur = redis.call('HGET', KEYS[1], field)
local equal
if expected == '' then equal = not cur
elseif not cur then equal = false
elseif cur == expected then equal = true
elseif string.sub(cur, 1, 1) == 'f' or string.sub(expected, 1, 1) == 'f' then
  local a, b = number(cur), number(expected)
  equal = a ~= nil and b ~= nil and a == b
else equal = false end
if not equal then return finish('OK', 0, cur) end
if new == '' then
  remove(field)
  return finish('OK', 1, false)
end
local full = put(field, new)
if full then return refused(full) end
return finish('OK', 1, new)
