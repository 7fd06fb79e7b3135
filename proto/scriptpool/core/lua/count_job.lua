-- Loaded before the record scripts that move a job between states (job_start, job_finish,
-- job_requeue). `count_job(record, id, to, now)` keeps the job's principal's queued and running
-- indexes (the queued-jobs quota, docs/adr/0020-quotas.md) in step with its record, in the same
-- script that changes the record's status: `to` is 'running', 'finished' or 'queued' (`now` its score).
local function count_job(record, id, to, now)
  local principal = redis.call('HGET', record, 'principal')
  if not principal then return end
  local queued = 'sp:principal:' .. principal .. ':queued'
  local running = 'sp:principal:' .. principal .. ':running'
  if to == 'queued' then
    redis.call('SREM', running, id)
    redis.call('ZADD', queued, now, id)
  else
    redis.call('ZREM', queued, id)
    if to == 'running' then redis.call('SADD', running, id) else redis.call('SREM', running, id) end
  end
end
