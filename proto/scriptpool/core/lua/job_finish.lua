-- After log_job.lua, end_job_session.lua and count_job.lua. Records a job's end (`JobRecords.finish_command`).
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'finished' then return 0 end
if ARGV[6] ~= '' and status ~= ARGV[6] then return 0 end
-- a worker finishes only the attempt it claimed (not one queued again after its lease expired)
if ARGV[10] ~= '' and (redis.call('HGET', KEYS[1], 'attempt') or '1') ~= ARGV[10] then return 0 end
-- the lease sweeper finishes a job only if its lease is still lapsed (a renewal since its read wins)
if ARGV[11] ~= '' then
  local lease = redis.call('ZSCORE', KEYS[2], ARGV[4])
  if lease and tonumber(lease) > tonumber(ARGV[11]) then return 0 end
end
count_job(KEYS[1], ARGV[4], 'finished')
local cred_hash = redis.call('HGET', KEYS[1], 'cred_hash')
if cred_hash then redis.call('DEL', 'sp:cred:' .. cred_hash) end
redis.call('HSET', KEYS[1], 'status', 'finished', 'result', ARGV[1], 'finished_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'credential', 'cancel_requested')
redis.call('DEL', KEYS[1] .. ':state')  -- the `job` State scope ends with its job
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
log_job(KEYS[1], 'job.finished', 'job ' .. ARGV[4] .. ' finished: ' .. ARGV[7], ARGV[4], ARGV[2])
end_job_session(KEYS[1], ARGV[4], ARGV[2], ARGV[8], ARGV[9])
return 1
