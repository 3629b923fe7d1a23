-- An operator's unblock (PrefixCount::unblock): a blocked count is cleared (deleted: a default count is
-- idle) and leaves the index. KEYS as FRAUD_VERIFIED; ARGV: prefix, now. Answers 1 if the prefix
-- was blocked at now, else 0.
--| needs: fraud
-- otpkit-core's PrefixCount::unblock: a prefix that is not blocked keeps its counts.
if not fraud_blocked(fraud_read(KEYS[1]), tonumber(ARGV[2])) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
