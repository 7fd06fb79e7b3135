-- KEYS: the job's record, the leases. ARGV: the job id. A lease left by a job no longer running goes.
if redis.call('HGET', KEYS[1], 'status') == 'running' then return 0 end
return redis.call('ZREM', KEYS[2], ARGV[1])
