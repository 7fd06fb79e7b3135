-- KEYS: 1 the session, 2 its State scope, 3 the principal's saved zset, 4 its snapshot bytes,
-- 5 the calling job's record (or any key when ARGV[10] is ''). ARGV: 1 principal, 2 the Session
-- message, 3 timeline position, 4 now, 5 snapshots kept per session, 6 max bytes per snapshot,
-- 7 max bytes per principal, 8 max saves per job, 9 session id, 10 '1' when a job saves.
local owner = redis.call('HGET', KEYS[1], 'principal')
if owner ~= ARGV[1] then return {'missing', owner or ''} end  -- (the owner for the operator's log only)
local bytes = #ARGV[2] + tonumber(redis.call('HGET', KEYS[2], '') or '0')
if bytes > tonumber(ARGV[6]) then return {'too_big', bytes} end
local prefix = 'sp:session:' .. ARGV[9] .. ':snapshot:'
local n = tonumber(redis.call('HGET', KEYS[1], 'snapshots') or '0') + 1
local old = n - tonumber(ARGV[5])
local old_bytes = 0
if old >= 1 then old_bytes = tonumber(redis.call('HGET', prefix .. old, 'bytes') or '0') end
local held = tonumber(redis.call('GET', KEYS[4]) or '0')
if held + bytes - old_bytes > tonumber(ARGV[7]) then return {'principal_full', held, bytes} end
if ARGV[10] == '1' then
  local saves = tonumber(redis.call('HGET', KEYS[5], '${SAVES_FIELD}') or '0')
  if saves >= tonumber(ARGV[8]) then return {'job_saves', saves} end
  redis.call('HINCRBY', KEYS[5], '${SAVES_FIELD}', 1)
end
redis.call('HSET', KEYS[1], 'snapshots', n)
redis.call('HSET', prefix .. n, 'session', ARGV[2], 'timeline_position', ARGV[3], 'saved_at', ARGV[4],
  'state', '1', 'bytes', bytes)
redis.call('COPY', KEYS[2], prefix .. n .. ':state', 'REPLACE')
redis.call('INCRBY', KEYS[4], bytes)
if old >= 1 and redis.call('DEL', prefix .. old, prefix .. old .. ':state') > 0 then
  redis.call('DECRBY', KEYS[4], old_bytes)
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[9])
return {'ok', n}
