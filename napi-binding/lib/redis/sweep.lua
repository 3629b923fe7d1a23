-- KEYS[1] = the purge schedule (sorted set of session keys by purge time); ARGV: now, limit.
-- Atomic, so each due session is purged (and reported) by exactly one process.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, k in ipairs(due) do
  redis.call('ZREM', KEYS[1], k)
  local v = redis.call('GET', k)
  if v then
    redis.call('DEL', k)
    table.insert(out, v)
  end
end
return out
