-- After log_job.lua and count_job.lua. A running job whose lease expired (its worker was lost) and that has retries
-- left goes back to `queued` for its next attempt, instead of finishing `worker_lost`. KEYS: the
-- record, the leases. ARGV: job id, now, the attempt the sweeper saw expire, a new credential and
-- its hash, the credential's TTL, the job-finished channel. The credential is replaced (the lost
-- worker's one stops working) and the job id published, so coordinators drop the old one from their
-- caches. Returns the new attempt, or 0 if the job is not that attempt running with retries left.
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'cancel_requested') then return 0 end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '1')
if attempt ~= tonumber(ARGV[3]) then return 0 end
if attempt > tonumber(redis.call('HGET', KEYS[1], 'max_retries') or '0') then return 0 end
local old = redis.call('HGET', KEYS[1], 'cred_hash')
if old then redis.call('DEL', 'sp:cred:' .. old) end
local owner = redis.call('HMGET', KEYS[1], 'principal', 'session_id')
redis.call('HSET', 'sp:cred:' .. ARGV[5], 'job_id', ARGV[1], 'principal', owner[1], 'session_id', owner[2])
redis.call('EXPIRE', 'sp:cred:' .. ARGV[5], ARGV[6])
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', attempt + 1, 'credential', ARGV[4], 'cred_hash', ARGV[5])
count_job(KEYS[1], ARGV[1], 'queued', ARGV[2])
redis.call('HDEL', KEYS[1], 'worker', 'started_at', 'current_session')
redis.call('DEL', KEYS[1] .. ':state')  -- the next attempt starts with an empty `job` State scope
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[7], ARGV[1])
log_job(KEYS[1], 'job.requeued',
  'job ' .. ARGV[1] .. ': worker lost on attempt ' .. attempt .. '; queued again', ARGV[1], ARGV[2])
return attempt + 1
