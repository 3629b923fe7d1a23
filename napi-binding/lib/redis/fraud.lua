-- Fraud Guard (SPEC §9), shared by the scripts that touch its counts: otpkit-core's PrefixCount
-- (core/src/fraud.rs: roll, estimate, blocked, admit, verified) mirrored line for line, in
-- integers exact in Lua's doubles (times in ms below 2^53; counts below 2^32, saturating as the
-- core's u32; estimates in thousandths below 2^43, and below 2^53 once multiplied by a rate in
-- thousandths). One count per (workspace, prefix), a hash of PrefixCount's fields
-- (`fr:<ws>:<prefix>`), written whole as the decimal strings of integers, expiring when it
-- becomes idle (ops::fraud_keep_until in src/ops.rs: a count gone then reads back as the
-- default one, which every rule treats as the idle one it replaced); and the workspace's index
-- of its prefixes for GET /v1/admin/workspaces/{id}/fraud, so no request scans keys (`fx:<ws>`, a
-- sorted set scored by when each count expires: members past it are dropped at each write, so it
-- holds only live prefixes, and it expires with its longest-lived count).
-- test/fraud-guard.test.js holds these functions to the core on random sequences.
local FRAUD_FIELDS = {'start', 'sends', 'verified', 'prevSends', 'prevVerified', 'blockedUntil', 'refused'}
local U32 = 4294967295
local function fraud_read(k)
  local v = redis.call('HMGET', k, unpack(FRAUD_FIELDS))
  local c = {}
  for i, f in ipairs(FRAUD_FIELDS) do c[f] = tonumber(v[i]) or 0 end
  return c
end
local function fraud_blocked(c, now)
  return c.blockedUntil > now
end
local function fraud_roll(c, window, now)
  local w = math.max(window, 1)
  if now < c.start + w then return end
  local aligned = now - now % w
  if now < c.start + 2 * w then
    c.prevSends, c.prevVerified = c.sends, c.verified
  else
    c.prevSends, c.prevVerified = 0, 0
  end
  c.sends, c.verified, c.start = 0, 0, aligned
end
local function fraud_estimate(c, window, now)
  local w = math.max(window, 1)
  local elapsed = math.min(math.max(now - c.start, 0), w)
  local weight = math.floor((w - elapsed) * 1000 / w)
  return c.sends * 1000 + c.prevSends * weight, c.verified * 1000 + c.prevVerified * weight
end
-- 0: counted; 1: refused (blocked); 2: refused, and the block begins with this send
local function fraud_admit(c, now, window, minSends, minConversion, blockMs)
  if fraud_blocked(c, now) then
    c.refused = math.min(c.refused + 1, U32)
    return 1
  end
  fraud_roll(c, window, now)
  local sends, verified = fraud_estimate(c, window, now)
  if sends >= minSends * 1000 and verified * 1000 < minConversion * sends then
    c.blockedUntil = now + blockMs
    c.refused = 1
    return 2
  end
  c.sends = math.min(c.sends + 1, U32)
  return 0
end
local function fraud_verified(c, window, now)
  fraud_roll(c, window, now)
  c.verified = math.min(c.verified + 1, U32)
end
local function fraud_write(k, index, prefix, c, window, now)
  local args = {}
  for _, f in ipairs(FRAUD_FIELDS) do
    args[#args + 1] = f
    args[#args + 1] = string.format('%.0f', c[f])
  end
  redis.call('HSET', k, unpack(args))
  local keep = string.format('%.0f', math.max(c.blockedUntil, c.start + 2 * window))
  redis.call('PEXPIREAT', k, keep)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', string.format('%.0f', now))
  redis.call('ZADD', index, keep, prefix)
  redis.call('PEXPIREAT', index, redis.call('ZREVRANGE', index, 0, 0, 'WITHSCORES')[2])
end
