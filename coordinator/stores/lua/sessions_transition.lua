-- A session's state change (suspend, resume, complete; stores/sessions.py) when the caller owns it
-- and it is in one of the states ARGV[4...]: {'ok', old state}, {'refused', state} or {'missing'}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state or redis.call('HGET', KEYS[1], 'principal') ~= ARGV[1] then return {'missing'} end
for i = 4, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', ARGV[3])
    redis.call('ZADD', KEYS[2], ARGV[3], KEYS[3])
    return {'ok', state}
  end
end
return {'refused', state}
