-- An approved verification of a session counted by Fraud Guard (PrefixCount::verified):
-- KEYS[1] = the prefix's count, KEYS[2] = the workspace's prefix index; ARGV: prefix, window ms,
-- now.
--| needs: fraud
local window, now = tonumber(ARGV[2]), tonumber(ARGV[3])
local c = fraud_read(KEYS[1])
fraud_verified(c, window, now)
fraud_write(KEYS[1], KEYS[2], ARGV[1], c, window, now)
return 1
