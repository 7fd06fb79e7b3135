-- ArtifactStore's delete of one artifact (stores/artifacts.py): its versions, blob references,
-- index entries and grants, and the bytes charged for it. ARGV[1]: the artifact id.
local id = ARGV[1]
local akey = 'sp:artifact:' .. id
local sid = redis.call('HGET', akey, 'session_id')
if not sid then return 0 end
local sess = 'sp:session:' .. sid
local owner = redis.call('HGET', akey, 'owner')
local index = sess .. ':artifacts'
local freed = 0
for v = 1, tonumber(redis.call('HGET', akey, 'latest') or '0') do
  local vk = akey .. ':v:' .. v
  local sha = redis.call('HGET', vk, 'sha')
  if sha then
    freed = freed + tonumber(redis.call('HGET', vk, 'charged') or redis.call('HGET', vk, 'size'))
    local blob = 'sp:blob:' .. sha
    if redis.call('EXISTS', blob) == 1 and redis.call('HINCRBY', blob, 'refs', -1) <= 0 then
      for i = 0, tonumber(redis.call('HGET', blob, 'chunks')) - 1 do redis.call('UNLINK', blob .. ':' .. i) end
      redis.call('DEL', blob)
    end
    redis.call('DEL', vk)
  end
end
redis.call('HDEL', sess .. ':artifact-names', redis.call('HGET', akey, 'name'))
redis.call('ZREM', index, id)
redis.call('ZREM', index .. ':created', id)
redis.call('ZREM', index .. ':size', id)
redis.call('SREM', index .. ':type:' .. redis.call('HGET', akey, 'type'), id)
for _, t in ipairs(cjson.decode(redis.call('HGET', akey, 'tags'))) do redis.call('SREM', index .. ':tag:' .. t, id) end
for _, w in ipairs(redis.call('SMEMBERS', akey .. ':words')) do redis.call('SREM', index .. ':word:' .. w, id) end
for _, p in ipairs(redis.call('HKEYS', akey .. ':grants')) do
  redis.call('SREM', 'sp:principal:' .. p .. ':artifact-grants', id)
  redis.call('ZREM', sess .. ':artifact-grants:' .. p, id)
end
redis.call('DEL', akey, akey .. ':words', akey .. ':grants', akey .. ':audit')
redis.call('DECRBY', sess .. ':artifact-bytes', freed)
redis.call('DECRBY', 'sp:principal:' .. owner .. ':artifact-bytes', freed)
redis.call('DECR', 'sp:principal:' .. owner .. ':artifact-count')
return 1
