-- After append_event.lua. ARGV: principal ('' = the session's owner), session id, field, value, ...
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
return append_event(ARGV[1], ARGV[2], fields)
