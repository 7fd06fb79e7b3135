-- A session's end, in one step (run in `delete`'s MULTI): reads which snapshots it keeps and what its
-- State holds at that moment, so a save or State write just before cannot leave bytes charged.
-- KEYS: 1 the principal's snapshot bytes, 2 its State bytes, 3 the session, 4 its State scope,
-- 5... its other keys. ARGV: 1 session id, 2 snapshots a session keeps.
local prefix = 'sp:session:' .. ARGV[1] .. ':snapshot:'
local latest = tonumber(redis.call('HGET', KEYS[3], 'snapshots') or '0')
local snapshot_bytes = 0
for n = math.max(1, latest - tonumber(ARGV[2]) + 1), latest do
  snapshot_bytes = snapshot_bytes + tonumber(redis.call('HGET', prefix .. n, 'bytes') or '0')
  redis.call('UNLINK', prefix .. n, prefix .. n .. ':state')
end
if snapshot_bytes > 0 then redis.call('DECRBY', KEYS[1], snapshot_bytes) end
local state_bytes = tonumber(redis.call('HGET', KEYS[4], '') or '0')
if state_bytes > 0 then redis.call('DECRBY', KEYS[2], state_bytes) end
return redis.call('UNLINK', unpack(KEYS, 3))
