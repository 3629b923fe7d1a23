-- The delivered send: the session is stored (with its purge entry) and the guard confirms it in
-- one atomic step, so a waiter told "delivered" always finds the session.
-- KEYS[1] = guard, KEYS[2] = session, KEYS[3] = purge schedule; ARGV: guard version, guard JSON,
-- guard keep ms, session value, session keep ms, purge time, and the guard's whole expected value
-- ('' when the caller read the guard just now: then its version is compared). The first try
-- decides on the value admit wrote, without a GET, and so compares that whole value: equal text is
-- equal state, however long the send took and whatever happened to the key meanwhile.
--| needs: versioned
if not holds(KEYS[1], ARGV[7]) then return 0 end
local v = ver(KEYS[1])
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], KEYS[2])
put(KEYS[1], v, ARGV[2], ARGV[3])
return 1
