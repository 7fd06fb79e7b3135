-- After quota_limit.lua. Loading a snapshot, checked and written in one step. KEYS: 1 the session, 2
-- its State scope, 3 the snapshot, 4 the snapshot's State copy, 5 the principal's State bytes, 6 its
-- sessions index, 7 its quota overrides. ARGV:
-- 1 principal, 2 its max State bytes, 3 now, 4 session id, 5 name, 6 description, 7 tags, 8 metadata.
-- The State copy replaces the session's, and the principal's State bytes change by the difference.
local owner = redis.call('HGET', KEYS[1], 'principal')
if owner ~= ARGV[1] then return {'missing', owner or ''} end  -- (the owner for the operator's log only)
if redis.call('EXISTS', KEYS[3]) == 0 then return {'gone'} end
if redis.call('HGET', KEYS[3], 'state') then
  local grow = tonumber(redis.call('HGET', KEYS[4], '') or '0') - tonumber(redis.call('HGET', KEYS[2], '') or '0')
  local held = tonumber(redis.call('GET', KEYS[5]) or '0')
  local limit = quota_limit(KEYS[7], 'state_bytes', ARGV[2])
  if grow > 0 and held + grow > limit then return {'principal_full', held, grow, tostring(limit)} end
  redis.call('DEL', KEYS[2])
  redis.call('COPY', KEYS[4], KEYS[2])
  if grow ~= 0 then redis.call('INCRBY', KEYS[5], grow) end
end
redis.call('HSET', KEYS[1], 'name', ARGV[5], 'description', ARGV[6], 'tags', ARGV[7], 'metadata', ARGV[8],
  'state', 'active', 'updated_at', ARGV[3])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
-- an active session again, by the principal's choice: no longer a job's, so never expired for it
redis.call('HDEL', KEYS[1], '${SESSION_JOB_FIELD}')
return {'ok'}
