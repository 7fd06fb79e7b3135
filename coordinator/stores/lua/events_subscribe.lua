-- After quota_limit.lua. KEYS: the subscription, the principal's index, the job's index ('' for a
-- client), the principal's hooks ('' unless a client registers a hook: coordinator/services/hooks.py),
-- the principal's quota overrides; ARGV: principal,
-- pattern, last id, job id, now, ttl, per-principal max, per-job max, max hooks, subscription id.
-- Forgets expired ids (and hooks whose subscription expired) first; a hook is counted and added here,
-- in the same step, so concurrent registrations cannot pass the hooks' limit.
local now, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
local limit = quota_limit(KEYS[5], 'subscriptions', ARGV[7])
if held >= limit then return {'principal', held, tostring(limit)} end
if KEYS[4] ~= '' then
  local hooks = 0
  for _, id in ipairs(redis.call('HKEYS', KEYS[4])) do
    if redis.call('EXISTS', 'sp:eventsub:' .. id) == 1 then hooks = hooks + 1 else redis.call('HDEL', KEYS[4], id) end
  end
  if hooks >= tonumber(ARGV[9]) then return {'hooks', hooks} end
  redis.call('HSET', KEYS[4], ARGV[10], ARGV[2])
end
if KEYS[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  held = redis.call('ZCARD', KEYS[3])
  if held >= tonumber(ARGV[8]) then return {'job', held} end
  redis.call('ZADD', KEYS[3], now + ttl, KEYS[1])
  redis.call('EXPIRE', KEYS[3], ttl)
end
redis.call('HSET', KEYS[1], 'principal', ARGV[1], 'pattern', ARGV[2], 'last', ARGV[3], 'job_id', ARGV[4])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('EXPIRE', KEYS[2], ttl)
return {'ok', 0}
