-- append_event(principal, session_id, fields): principal '' = the session's owner; no owner (the
-- session is gone): the entry is nobody's and is dropped. Included by the scripts that append events.
local function append_event(principal, sid, fields)
  if principal == nil or principal == '' then
    if sid == nil or sid == '' then return end
    principal = redis.call('HGET', 'sp:session:' .. sid, 'principal')
    if not principal then return end
  end
  local keep = tonumber(redis.call('GET', '${EVENT_RETENTION_KEY}') or '') or ${DEFAULT_EVENT_RETENTION}
  return redis.call('XADD', 'sp:events:' .. principal, 'MAXLEN', '~', keep, '*', unpack(fields))
end
