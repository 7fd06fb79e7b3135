-- After state_prelude.lua: State.set (an empty value deletes).
if ARGV[3] == '' then remove(ARGV[2]) return finish('OK') end
local full = put(ARGV[2], ARGV[3])
if full then return refused(full) end
return finish('OK')
