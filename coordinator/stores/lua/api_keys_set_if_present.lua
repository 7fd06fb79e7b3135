-- Set one field of an API key record only if the record is still there (an HSET on a record that
-- expired would make a partial one); ARGV[3] > 0 also sets its time to live.
-- KEYS: 1 record. ARGV: 1 field, 2 value, 3 ttl seconds (0 = keep).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
