-- An admitted send: KEYS[1] = the destination guard (compare-and-set, as CAS), KEYS[2] = the
-- workspace flood shield, a hash {start, count} counted in this same atomic step, so a burst of
-- sends to different destinations, from any number of processes, admits exactly the limit
-- (issue 19: reading the shield earlier and writing it back let a burst of 500 through a limit
-- of 10). The shield's rule is otpkit-core's FloodShield::admit, mirrored line for line (a window
-- of ARGV[6] ms that starts at the first send after the last one ended; a request whose clock
-- read a little before the start counts in it, a clock a whole window back starts a new one); a
-- test checks the two agree on random sequences. KEYS[3] = the workspace's spend of the day
-- (policy dailySpendLimit), a hash {day, micros} charged in the same step, before the shield:
-- otpkit-core's SpendCounter::charge, mirrored line for line (a later day starts at 0, an
-- earlier one counts in the stored day; refused when the cost would take the spend past the
-- limit), checked against the core by a test as well. Every amount is an integer of micro-units
-- below 2^53 (the core caps them), exact in Lua's doubles; the count is written with HSET/HINCRBY
-- of the argument strings, never a number formatted by Lua. Fraud Guard (policy fraudGuard) is
-- charged first of all, as otpkit-core's spend::charge_workspace does: the count of the
-- destination's prefix (ARGV[12], a key not declared in KEYS, in the workspace's slot; see
-- FRAUD) refuses while blocked or begins a block, and that refusal is written (it counts the
-- refused send) while nothing else is; a send it admits is counted only if the cap and the
-- shield admit it too.
-- ARGV: guard version, guard JSON, guard keep ms, flood limit ('' = no shield), now, window ms,
-- shield keep ms, spend limit ('' = no cap), cost, day, spend keep ms, then Fraud Guard's (all
-- absent or '' = not charged): the prefix's count key, the workspace's prefix index, the prefix,
-- window ms, minSends, minConversion (thousandths), block ms. Answers 1 (all written), {0, the
-- guard's value} (it changed: decide again on that), {-1, window start} (the shield refuses), {-2, day} (the cap
-- refuses; neither writes anything) or {-3, '1' | '0'} (Fraud Guard refuses; whether the block
-- began with this send).
--| needs: versioned charge-fns
local v1 = ver(KEYS[1])
if v1 ~= tonumber(ARGV[1]) then return {0, redis.call('GET', KEYS[1])} end
local refused, st = charge_decide(KEYS[2], KEYS[3])
if refused then return refused end
put(KEYS[1], v1, ARGV[2], ARGV[3])
charge_write(KEYS[2], KEYS[3], st)
return 1
