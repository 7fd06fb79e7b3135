-- After state_prelude.lua: State.list.
return finish('OK', redis.call('HKEYS', KEYS[1]))