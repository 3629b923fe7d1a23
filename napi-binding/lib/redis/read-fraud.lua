-- Every Fraud Guard count of a workspace (KEYS[1] = its prefix index; ARGV[1] = the key prefix of
-- its counts, ARGV[2] = now): a flat list of the prefix then its FRAUD_FIELDS, for each count
-- still stored. Prefixes whose count has expired leave the index here.
--| needs: fraud
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local out = {}
for _, p in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('HMGET', ARGV[1] .. p, unpack(FRAUD_FIELDS))
  if v[1] then
    out[#out + 1] = p
    for i = 1, #FRAUD_FIELDS do out[#out + 1] = v[i] or '0' end
  else
    redis.call('ZREM', KEYS[1], p)
  end
end
return out
