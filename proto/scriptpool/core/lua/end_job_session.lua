-- After append_event.lua. The end of the job a session was made for: the session is completed (as
-- `Session.complete` would: its state, index score, timeline entry and events) and, when it has a
-- retention, put in the expiring-sessions zset for the coordinator's sweeper. A session whose mark
-- names another job (or none: a session a client gave, or one a later job was submitted into) is
-- left alone.
local function end_job_session(job_key, job_id, now, from_active, from_suspended)
  local sid = redis.call('HGET', job_key, 'session_id')
  if not sid then return end
  local skey = 'sp:session:' .. sid
  local s = redis.call('HMGET', skey, '${SESSION_JOB_FIELD}', 'state', 'principal', '${SESSION_RETENTION_FIELD}')
  if s[1] ~= job_id then return end
  local old = s[2]
  if old == 'active' or old == 'suspended' then
    local data = from_active
    if old == 'suspended' then data = from_suspended end
    redis.call('HSET', skey, 'state', 'completed', 'updated_at', now)
    redis.call('ZADD', 'sp:principal:' .. s[3] .. ':sessions', now, sid)
    redis.call('XADD', skey .. ':timeline', 'MAXLEN', '~', '${TIMELINE_MAX}', '*',
      'type', 'session.state_changed', 'description', old .. ' -> completed', 'job_id', job_id, 'ts', now,
      'data', data)
    for _, kind in ipairs({'session.state_changed', 'session.completed'}) do
      append_event(s[3], sid,
        {'type', kind, 'description', kind, 'job_id', job_id, 'ts', now, 'data', data, 'session_id', sid})
    end
  end
  local keep = tonumber(s[4] or '0') or 0
  if keep > 0 then redis.call('ZADD', '${EXPIRING_SESSIONS_KEY}', tonumber(now) + keep, sid) end
end
