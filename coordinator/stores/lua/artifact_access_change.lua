-- KEYS: grants, principal's grant set, artifact; ARGV: principal, level, artifact id, grant|revoke
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local level = tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local sid, created = unpack(redis.call('HMGET', KEYS[3], 'session_id', 'created_at'))
local in_session = 'sp:session:' .. sid .. ':artifact-grants:' .. ARGV[1]
if ARGV[4] == 'grant' then
  if current < level then redis.call('HSET', KEYS[1], ARGV[1], level) end
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('ZADD', in_session, created, ARGV[3])
  return math.max(current, level)
end
if current >= level then
  if level <= 1 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('SREM', KEYS[2], ARGV[3])
    redis.call('ZREM', in_session, ARGV[3])
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[1], level - 1)
  return level - 1
end
return current
