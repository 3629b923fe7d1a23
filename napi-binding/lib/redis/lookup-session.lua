-- KEYS[1] = key index entry; ARGV[1] = workspace key prefix, ARGV[2] = session key prefix,
-- ARGV[3] = session id ('' for none). The key's workspace and, in it, the session: one round trip
-- for authentication and the read of a verify. The session key is built from the workspace the
-- key belongs to, so no other workspace's session can be read.
local id = redis.call('GET', KEYS[1])
if not id then return {false, false} end
local ws = redis.call('GET', ARGV[1] .. id)
if not ws or ARGV[3] == '' then return {ws, false} end
return {ws, redis.call('GET', ARGV[2] .. id .. ':' .. ARGV[3])}
