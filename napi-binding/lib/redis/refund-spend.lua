-- Spend handed back (a definite delivery failure): KEYS[1] = the spend hash; ARGV: day, micros.
-- otpkit-core's SpendCounter::refund: only the day counted, never below 0.
local sp = redis.call('HMGET', KEYS[1], 'day', 'micros')
if tonumber(sp[1]) ~= tonumber(ARGV[1]) then return 0 end
if (tonumber(sp[2]) or 0) <= tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], 'micros', '0')
else redis.call('HINCRBY', KEYS[1], 'micros', '-' .. ARGV[2]) end
return 1
