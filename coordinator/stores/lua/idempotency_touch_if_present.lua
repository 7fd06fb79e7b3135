-- Sent after WATCH on the key and before MULTI: a key already there is modified (its `repeats`
-- counted), so the transaction that would claim it again aborts.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'repeats', 1) end
return 0
