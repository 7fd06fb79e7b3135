-- Loaded before the scripts that enforce a per-principal quota (coordinator/stores/quotas.py).
-- `quota_limit(key, name, max)`: the principal's limit for quota `name`: its override in the hash
-- `key` (`scriptpool quota set`), capped at the server maximum `max`; `max` when it has none.
local function quota_limit(key, name, max)
  max = tonumber(max)
  local v = tonumber(redis.call('HGET', key, name) or '')
  if v == nil or v > max then return max end
  return v
end
