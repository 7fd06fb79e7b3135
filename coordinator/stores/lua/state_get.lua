-- After state_prelude.lua: State.get.
return finish('OK', redis.call('HGET', KEYS[1], ARGV[2]))