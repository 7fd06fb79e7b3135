-- After quota_limit.lua, append_event.lua and the `inline` table of functions (admission.py).
-- A submission's admission and its writes in one step (stores/jobs.py,
-- docs/adr/0020-quotas.md): the principal's queued-jobs quota and its submission token bucket are
-- checked, and only if both admit the whole batch are the bucket's tokens taken and the batch's
-- writes (job records, RQ's enqueue, the queued-jobs index, the idempotency claim) run.
-- KEYS: the principal's quota overrides, its queued jobs (zset), its token bucket. ARGV[1] the
-- batch's job count, [2] the server's max queued jobs, [3] max rate, [4] max burst, then the writes:
-- each its argument count followed by the command and its arguments; '@inline' N stands for an EVAL
-- of the script `inline[N]` runs (Lua cannot EVAL): its key count, keys and arguments follow.
-- Returns {'ok'}, {'queued_jobs', limit, held} or {'submissions_per_second', rate, burst, tokens,
-- seconds until enough tokens ('-1': never: the batch is over the burst, or the rate is 0)}.
local n = tonumber(ARGV[1])
local max_queued = quota_limit(KEYS[1], 'queued_jobs', ARGV[2])
local held = redis.call('ZCARD', KEYS[2])
if held + n > max_queued then
  -- before refusing, forget ids whose record left `queued` some way the record scripts did not see
  -- (a record deleted by hand), or whose RQ job is gone (`rq empty`, RQ's delete, an expired RQ job:
  -- the sweeper ends such records later): the oldest ${REPAIR_SCAN} are looked at, so a refusal stays cheap
  local stale = {}
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, ${REPAIR_SCAN} - 1)) do
    if redis.call('HGET', 'sp:job:' .. id, 'status') ~= 'queued' or redis.call('EXISTS', 'rq:job:' .. id) == 0 then
      stale[#stale + 1] = id
    end
  end
  if #stale > 0 then
    redis.call('ZREM', KEYS[2], unpack(stale))
    held = redis.call('ZCARD', KEYS[2])
  end
  if held + n > max_queued then return {'queued_jobs', tostring(max_queued), tostring(held)} end
end
local rate = quota_limit(KEYS[1], 'submissions_per_second', ARGV[3])
local burst = quota_limit(KEYS[1], 'submission_burst', ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[3], 'tokens', 'at')
local tokens = burst
if rate <= 0 then
  tokens = 0  -- a rate of 0 admits nothing, not even a first burst
elseif bucket[1] then
  tokens = math.min(burst, tonumber(bucket[1]) + math.max(0, now - tonumber(bucket[2])) * rate)
end
if tokens < n then
  local wait = -1
  if n <= burst and rate > 0 then wait = (n - tokens) / rate end
  return {'submissions_per_second', tostring(rate), tostring(burst), tostring(tokens), tostring(wait)}
end
redis.call('HSET', KEYS[3], 'tokens', tostring(tokens - n), 'at', tostring(now))
-- (past this the bucket is full again, as if it were not there)
if rate > 0 then redis.call('PEXPIRE', KEYS[3], math.ceil((burst / rate) * 1000) + 1000) end
local i = 5
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  if ARGV[i + 1] == '@inline' then
    local keys = tonumber(ARGV[i + 3])
    inline[ARGV[i + 2]]({unpack(ARGV, i + 4, i + 3 + keys)}, {unpack(ARGV, i + 4 + keys, i + count)})
  else
    redis.call(unpack(ARGV, i + 1, i + count))
  end
  i = i + count + 1
end
return {'ok'}
