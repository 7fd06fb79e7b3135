-- After quota_limit.lua. ArtifactStore's store/update in one step (stores/artifacts.py): checks the session and the quotas,
-- moves the upload's chunks to the blob (or adds a reference to an existing one), writes the
-- version, the record and every index. ARGV[1]: the version as JSON.
local h = cjson.decode(ARGV[1])
local sess = 'sp:session:' .. h.session_id
local state = redis.call('HGET', sess, 'state')
if not state then return {'no_session'} end
if state ~= 'active' then return {'inactive', state} end
local id = h.update_id
if id ~= '' then
  if redis.call('HGET', 'sp:artifact:' .. id, 'session_id') ~= h.session_id then return {'missing'} end
else
  id = redis.call('HGET', sess .. ':artifact-names', h.name) or h.new_id
end
local akey = 'sp:artifact:' .. id
local latest = tonumber(redis.call('HGET', akey, 'latest') or '0')
if latest >= tonumber(h.max_versions) then return {'versions', tostring(latest)} end
local owner_count = 'sp:principal:' .. h.owner .. ':artifact-count'
if latest == 0 then
  local held = redis.call('ZCARD', sess .. ':artifacts')
  if held >= tonumber(h.max_session_artifacts) then return {'session_artifacts', tostring(held)} end
  held = tonumber(redis.call('GET', owner_count) or '0')
  if held >= tonumber(h.max_principal_artifacts) then return {'principal_artifacts', tostring(held)} end
end
local size = tonumber(h.charged)
local used = tonumber(redis.call('GET', sess .. ':artifact-bytes') or '0')
if used + size > tonumber(h.max_session) then return {'session_quota', tostring(used)} end
local owner_bytes = 'sp:principal:' .. h.owner .. ':artifact-bytes'
used = tonumber(redis.call('GET', owner_bytes) or '0')
local limit = quota_limit('sp:principal:' .. h.owner .. ':quota', 'artifact_bytes', h.max_principal)
if used + size > limit then return {'principal_quota', tostring(used), tostring(limit), h.owner} end
local chunks = tonumber(h.chunks)
local blob = 'sp:blob:' .. h.sha
if redis.call('EXISTS', blob) == 1 then
  redis.call('HINCRBY', blob, 'refs', 1)
  for i = 0, chunks - 1 do redis.call('UNLINK', h.upload .. i) end
else
  for i = 0, chunks - 1 do
    if redis.call('EXISTS', h.upload .. i) == 0 then return {'upload_lost'} end
  end
  for i = 0, chunks - 1 do
    redis.call('RENAME', h.upload .. i, blob .. ':' .. i)
    redis.call('PERSIST', blob .. ':' .. i)
  end
  redis.call('HSET', blob, 'size', h.size, 'chunks', h.chunks, 'refs', 1)
end
local index = sess .. ':artifacts'
local version = redis.call('HINCRBY', akey, 'latest', 1)
if version == 1 then
  redis.call('INCR', owner_count)
  redis.call('HSET', akey, 'id', id, 'session_id', h.session_id, 'owner', h.owner, 'name', h.name,
             'created_at', h.now)
  redis.call('HSET', sess .. ':artifact-names', h.name, id)
  redis.call('ZADD', index .. ':created', h.now, id)
else
  redis.call('SREM', index .. ':type:' .. redis.call('HGET', akey, 'type'), id)
  for _, t in ipairs(cjson.decode(redis.call('HGET', akey, 'tags'))) do
    redis.call('SREM', index .. ':tag:' .. t, id)
  end
  for _, w in ipairs(redis.call('SMEMBERS', akey .. ':words')) do
    redis.call('SREM', index .. ':word:' .. w, id)
  end
  redis.call('DEL', akey .. ':words')
end
redis.call('HSET', akey, 'type', h.type, 'tags', h.tags, 'updated_at', h.now, 'size', h.size)
redis.call('HSET', akey .. ':v:' .. version, 'type', h.type, 'name', h.name, 'description', h.description,
           'tags', h.tags, 'custom', ARGV[2], 'sha', h.sha, 'size', h.size, 'created_at', h.now,
           'charged', h.charged)
if h.encoding ~= '' then redis.call('HSET', akey .. ':v:' .. version, 'encoding', h.encoding) end
redis.call('ZADD', index, h.now, id)
redis.call('ZADD', index .. ':size', h.size, id)
redis.call('SADD', index .. ':type:' .. h.type, id)
for _, t in ipairs(cjson.decode(h.tags)) do redis.call('SADD', index .. ':tag:' .. t, id) end
for _, w in ipairs(h.words) do
  redis.call('SADD', index .. ':word:' .. w, id)
  redis.call('SADD', akey .. ':words', w)
end
redis.call('INCRBY', sess .. ':artifact-bytes', h.charged)
redis.call('INCRBY', owner_bytes, h.charged)
return {'ok', id, version}
