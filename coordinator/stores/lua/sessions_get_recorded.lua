-- After timeline_record_call.lua. A job's Session.get (and getMetadata/getTags): the read, the access check and the call's timeline
-- record in one round trip. KEYS: the session record, its grants hash (stores/session_access.py: any
-- grant allows a read). Returns the session's fields, or, when it is neither the caller's nor granted
-- to it, its owner ('' for none: the owner is for the audit and the operator's log only, the caller
-- gets one answer either way).
local raw = redis.call('HGETALL', KEYS[1])
local owner = nil
for i = 1, #raw, 2 do
  if raw[i] == 'principal' then owner = raw[i + 1] end
end
if not owner or (owner ~= ARGV[1] and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0) then
  record_call(2, 'NOT_FOUND')
  return owner or ''
end
record_call(2, 'OK')
return raw
