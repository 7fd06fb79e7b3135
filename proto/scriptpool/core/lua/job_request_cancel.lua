-- The flag is set for queued jobs too: if a worker claims the job between this script and the
-- coordinator finishing it as cancelled, the start script refuses it (or the worker's first
-- heartbeat kills it).
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'running' or status == 'queued' then redis.call('HSET', KEYS[1], 'cancel_requested', '1') end
return status
