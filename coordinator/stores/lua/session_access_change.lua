-- A session grant set or removed (stores/session_access.py). KEYS: the session record, its grants
-- hash, the grantee's shared-sessions zset. ARGV: grantee, level ('0' = revoke), session id, now,
-- most grants per session, most sessions shared to one principal. Returns {'ok'}, {'missing'} or,
-- when a bound is reached, {'session', grants held} / {'principal', sessions shared to the grantee}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[3])
  return {'ok'}
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  local held = redis.call('HLEN', KEYS[2])
  if held >= tonumber(ARGV[5]) then return {'session', held} end
  local shared = redis.call('ZCARD', KEYS[3])
  if shared >= tonumber(ARGV[6]) then return {'principal', shared} end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return {'ok'}
