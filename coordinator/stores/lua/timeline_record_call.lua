-- A `global_call` entry written by a Lua script, in the same round trip as the operation it records.
-- `record_call(base, outcome)` reads ARGV[base..]: the timeline key ('' = do not record), job id, ts,
-- op name, then (outcome, data) pairs built by `CallRecord.lua_args` for every outcome the script
-- can reach. Its fields are exactly those `append` writes for `record_job_call`.
local function record_call(base, outcome)
  local key = ARGV[base]
  if key == '' then return end
  local data = ''
  for i = base + 4, #ARGV - 1, 2 do
    if ARGV[i] == outcome then data = ARGV[i + 1] end
  end
  redis.call('XADD', key, 'MAXLEN', '~', '${TIMELINE_MAX}', '*', 'type', 'global_call',
    'description', ARGV[base + 3] .. ' -> ' .. outcome, 'job_id', ARGV[base + 1], 'ts', ARGV[base + 2], 'data', data)
end
