-- Turn a key of an earlier version (a string: the principal) into a record, once: a concurrent
-- adoption, or a revocation meanwhile, leaves it as it is.
-- KEYS: 1 record, 2 id -> digest hash, 3 every key's index, 4 the principal's index.
-- ARGV: 1 id, 2 digest, 3 principal, 4 scopes, 5 created.
if redis.call('TYPE', KEYS[1]).ok ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'principal', ARGV[3], 'name', 'legacy', 'scopes', ARGV[4],
  'created', ARGV[5], 'expires', '0', 'last_used', '0', 'revoked', '0', 'legacy', '1')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
return 1
