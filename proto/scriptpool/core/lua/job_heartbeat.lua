-- A running job's lease renewal. KEYS: the record, the leases. ARGV: new expiry, job id, attempt.
-- Returns -1 (not that attempt running), 1 (cancel requested) or 0.
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return -1 end
if (redis.call('HGET', KEYS[1], 'attempt') or '1') ~= ARGV[3] then return -1 end
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
if redis.call('HGET', KEYS[1], 'cancel_requested') then return 1 end
return 0
