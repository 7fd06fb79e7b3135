-- After state_prelude.lua: State.delete.
local old = redis.call('HGET', KEYS[1], ARGV[2])
remove(ARGV[2])
return finish('OK', old)
