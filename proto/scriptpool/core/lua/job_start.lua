-- After log_job.lua and count_job.lua. A worker claims a queued job. KEYS: the record, the leases. ARGV: worker name,
-- now, lease expiry, job id. Returns the spec, credential, principal, attempt, created_at and
-- traceparent, or false.
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return false end
-- a cancel that arrived while the job was queued wins, even if it has not finished the job yet
if redis.call('HGET', KEYS[1], 'cancel_requested') then return false end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started_at', ARGV[2])
count_job(KEYS[1], ARGV[4], 'running')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
log_job(KEYS[1], 'job.started', 'job ' .. ARGV[4] .. ' started on ' .. ARGV[1], ARGV[4], ARGV[2])
return redis.call('HMGET', KEYS[1], 'spec', 'credential', 'principal', 'attempt', 'created_at', 'traceparent')
