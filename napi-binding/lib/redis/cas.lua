-- KEYS[1]; ARGV: expected version, new JSON ('' deletes), keep ms ('-1' keeps the current TTL),
-- and optionally the whole expected value: a step decided on a value read earlier (not just now)
-- is written only if the key still holds exactly that value. Answers {1} (written) or {0, the
-- key's value (false when absent)}, so a step can be decided again on it without another GET.
--| needs: versioned
local v = ver(KEYS[1])
if not holds(KEYS[1], ARGV[4]) or v ~= tonumber(ARGV[1]) then return {0, redis.call('GET', KEYS[1])} end
put(KEYS[1], v, ARGV[2], ARGV[3])
return {1}
