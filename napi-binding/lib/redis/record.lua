-- KEYS[1] = the workspace's lifecycle event list, KEYS[2] = the sequence, KEYS[3] = its list of
-- events an end user can repeat without a send (otpkit_core::audit::AuditEvent::is_repeatable:
-- reused, refusals, verify_rejected), so a flood of those never trims lifecycle events away;
-- ARGV[1] = n, ARGV[2] = events kept per list, ARGV[3..n+2] = event JSON lines, each after one
-- character naming its list ('r' repeatable, 'l' lifecycle), then analytics operations of 4
-- arguments each (op, key, a, b), applied in the same atomic step. Both lists share the one
-- sequence, so a query merges them newest first. A list is trimmed to its cap and kept 90 days
-- from its last write. The analytics keys are not declared in KEYS: one Redis, not a cluster.
local n = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local wrote = {false, false, false}
for i = 3, n + 2 do
  local seq = redis.call('INCR', KEYS[2])
  local list = 1
  if string.sub(ARGV[i], 1, 1) == 'r' then list = 3 end
  redis.call('LPUSH', KEYS[list], seq .. '|' .. string.sub(ARGV[i], 2))
  wrote[list] = true
end
for _, list in ipairs({1, 3}) do
  if wrote[list] then
    redis.call('LTRIM', KEYS[list], 0, keep - 1)
    redis.call('PEXPIRE', KEYS[list], 7776000000) -- 90 days
  end
end
local i = n + 3
while i + 3 <= #ARGV do
  local op, k, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'H' then redis.call('HINCRBY', k, a, b)
  elseif op == 'E' then redis.call('PEXPIREAT', k, a)
  elseif op == 'O' then redis.call('ZADD', k, a, b)
  elseif op == 'C' then redis.call('ZREM', k, b)
  elseif op == 'R' then redis.call('ZREMRANGEBYSCORE', k, '-inf', a)
  elseif op == 'T' then redis.call('PEXPIRE', k, a)
  end
  i = i + 4
end
return 1
