-- A job's claim to start one more replay. KEYS[1] its record; ARGV[1] the most it may start.
-- Returns {'replayed'} for a job a replay submitted, {'exhausted', n} past the maximum, else
-- {'ok', spec} (its spec, whose limits cap the replayed jobs').
if redis.call('HEXISTS', KEYS[1], '${REPLAYED_FIELD}') == 1 then return {'replayed'} end
local started = tonumber(redis.call('HGET', KEYS[1], '${REPLAYS_FIELD}') or '0')
if started >= tonumber(ARGV[1]) then return {'exhausted', started} end
redis.call('HINCRBY', KEYS[1], '${REPLAYS_FIELD}', 1)
return {'ok', redis.call('HGET', KEYS[1], 'spec')}
