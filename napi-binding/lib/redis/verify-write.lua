-- A verify's write: CAS of the session (KEYS[1]; ARGV as CAS), answering {1, the value of KEYS[2]}
-- — the session's destination guard, read in the same step — or, on a conflict, {0, the session's
-- value} (false when absent) for the next try to decide on. The failure streak that follows the
-- answer decides on the guard's value (compared whole when it writes) instead of reading it again.
--| needs: versioned
local v = ver(KEYS[1])
if not holds(KEYS[1], ARGV[4]) or v ~= tonumber(ARGV[1]) then return {0, redis.call('GET', KEYS[1])} end
put(KEYS[1], v, ARGV[2], ARGV[3])
return {1, redis.call('GET', KEYS[2])}
