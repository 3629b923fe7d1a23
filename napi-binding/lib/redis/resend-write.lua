-- A resend's write: CAS of the session (KEYS[1]; ARGV: expected version, JSON, keep ms) and its
-- purge time in the schedule (KEYS[2]; ARGV[4]) in one step, so a code whose expiry moved is
-- never purged at the old time. Answers as CAS: {1}, or {0, the session's value} on a conflict.
--| needs: versioned
local v = ver(KEYS[1])
if v ~= tonumber(ARGV[1]) then return {0, redis.call('GET', KEYS[1])} end
put(KEYS[1], v, ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
return {1}
