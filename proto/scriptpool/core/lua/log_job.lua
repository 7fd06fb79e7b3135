-- After append_event.lua. Appends a job lifecycle entry to the job's session timeline and to its
-- owner's event stream.
local function log_job(job_key, kind, description, job_id, now)
  local sid = redis.call('HGET', job_key, 'session_id')
  if not sid then return end
  redis.call('XADD', 'sp:session:' .. sid .. ':timeline', 'MAXLEN', '~', '${TIMELINE_MAX}', '*',
    'type', kind, 'description', description, 'job_id', job_id, 'ts', now, 'data', '')
  append_event('', sid,
    {'type', kind, 'description', description, 'job_id', job_id, 'ts', now, 'data', '', 'session_id', sid})
end
