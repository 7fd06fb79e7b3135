-- A session's state change (suspend, resume, complete; stores/sessions.py) when the caller owns it
-- and it is in one of the states ARGV[4...]: {'ok', old state}, {'refused', state} or {'missing', its
-- owner or ''} (the owner only for the operator's log: the caller gets one answer either way).
local state = redis.call('HGET', KEYS[1], 'state')
local owner = redis.call('HGET', KEYS[1], 'principal')
if not state or owner ~= ARGV[1] then return {'missing', owner or ''} end
for i = 4, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', ARGV[3])
    redis.call('ZADD', KEYS[2], ARGV[3], KEYS[3])
    return {'ok', state}
  end
end
return {'refused', state}
