-- KEYS: the intermediate queue, the queue, the job's record, RQ's job hash. ARGV: the job id.
-- Still in the intermediate queue means no worker's start transaction took it out (that transaction
-- also claims the record), so a `queued` record goes back on the queue, at its head where it was.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return false end
if redis.call('HGET', KEYS[3], 'status') == 'queued' and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 'requeued'
end
return 'dropped'
