-- Redis Cluster's half of ADMIT, once the guard (another slot) has recorded the send: KEYS[1] =
-- the flood shield, KEYS[2] = the day's spend (both, and Fraud Guard's keys in ARGV, in the
-- workspace's slot); ARGV as ADMIT's (1 to 3 unused). Answers 1 (charged) or ADMIT's refusals;
-- the flow refunds a refused send at the guard, as it does for the Worker's two objects.
--| needs: charge-fns
local refused, st = charge_decide(KEYS[1], KEYS[2])
if refused then return refused end
charge_write(KEYS[1], KEYS[2], st)
return 1
