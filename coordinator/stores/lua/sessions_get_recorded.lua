-- After timeline_record_call.lua. A job's Session.get (and getMetadata/getTags): the read, the owner check and the call's timeline
-- record in one round trip. Returns the session's fields, or, when it is not the caller's, its owner
-- ('' for none: the owner is for the operator's log only, the caller gets one answer either way).
local raw = redis.call('HGETALL', KEYS[1])
local owner = nil
for i = 1, #raw, 2 do
  if raw[i] == 'principal' then owner = raw[i + 1] end
end
if owner ~= ARGV[1] then
  record_call(2, 'NOT_FOUND')
  return owner or ''
end
record_call(2, 'OK')
return raw
