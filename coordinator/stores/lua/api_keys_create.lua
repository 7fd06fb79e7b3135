-- Create an API key record, refusing past the principal's bound of active keys; for a rotation
-- (ARGV[11] = the old id) the old key must be active, is left out of the count, and is revoked in
-- the same step. Index entries whose record is gone (past its retention) are dropped on the way.
-- KEYS: 1 new record, 2 id -> digest hash, 3 every key's index, 4 the principal's index, 5 old record (or KEYS[1])
-- ARGV: 1 id, 2 digest, 3 principal, 4 name, 5 scopes, 6 created, 7 expires (0 = never), 8 max active,
--       9 now, 10 record ttl seconds (0 = none), 11 old id ("" = none), 12 revoked retention seconds
local now = tonumber(ARGV[9])
local old_id = ARGV[11]
if old_id ~= '' then
  local old = redis.call('HMGET', KEYS[5], 'id', 'revoked', 'expires')
  if old[1] ~= old_id then return {'gone'} end
  if tonumber(old[2]) ~= 0 then return {'revoked'} end
  if tonumber(old[3]) ~= 0 and tonumber(old[3]) <= now then return {'expired'} end
end
local active = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local digest = redis.call('HGET', KEYS[2], id)
  local fields = digest and redis.call('HMGET', '${RECORD_PREFIX}' .. digest, 'revoked', 'expires') or {false, false}
  if not fields[1] then
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[2], id)
  elseif id ~= old_id and tonumber(fields[1]) == 0 and (tonumber(fields[2]) == 0 or tonumber(fields[2]) > now) then
    active = active + 1
  end
end
if active >= tonumber(ARGV[8]) then return {'full', active} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'principal', ARGV[3], 'name', ARGV[4], 'scopes', ARGV[5],
  'created', ARGV[6], 'expires', ARGV[7], 'last_used', '0', 'revoked', '0')
if tonumber(ARGV[10]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[10]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
if old_id ~= '' then
  redis.call('HSET', KEYS[5], 'revoked', ARGV[9])
  redis.call('EXPIRE', KEYS[5], ARGV[12])
end
return {'ok'}
