-- The workspace's charges of an admitted send, shared by ADMIT (one Redis: with the guard, one
-- step) and CHARGE (Redis Cluster: the guard lives in its destination's slot, these counters in
-- the workspace's). `charge_decide(kflood, kspend)` answers a refusal ({-1, window start},
-- {-2, day}, {-3, '1' | '0'}; only Fraud Guard's is written: it counts the refused send) or nil
-- and the state that `charge_write(kflood, kspend, st)` then writes. ARGV as ADMIT's (4 to 18).
--| needs: fraud
local function charge_decide(kflood, kspend)
  local now = tonumber(ARGV[5])
  local st = {now = now}
  if ARGV[12] ~= nil and ARGV[12] ~= '' then
    st.fraud, st.fwindow = fraud_read(ARGV[12]), tonumber(ARGV[15])
    local r = fraud_admit(st.fraud, now, st.fwindow, tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18]))
    if r > 0 then
      fraud_write(ARGV[12], ARGV[13], ARGV[14], st.fraud, st.fwindow, now)
      return {-3, tostring(r - 1)}
    end
  end
  if ARGV[8] ~= '' then
    local slimit, cost, day = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
    local sp = redis.call('HMGET', kspend, 'day', 'micros')
    st.sday, st.spent = tonumber(sp[1]), tonumber(sp[2]) or 0
    st.fresh = st.sday == nil or day > st.sday
    if st.fresh then st.sday, st.spent = day, 0 end
    if cost > 0 and st.spent + cost > slimit then return {-2, tostring(st.sday)} end
  end
  if ARGV[4] ~= '' then
    local limit, window = tonumber(ARGV[4]), tonumber(ARGV[6])
    local shield = redis.call('HMGET', kflood, 'start', 'count')
    local start, count = tonumber(shield[1]), tonumber(shield[2]) or 0
    if start == nil or now >= start + window or now + window <= start then start, count = now, 0 end
    if count >= limit then return {-1, tostring(start)} end
    st.start, st.count = start, count
  end
  return nil, st
end
local function charge_write(kflood, kspend, st)
  if st.start ~= nil then
    redis.call('HSET', kflood, 'start', tostring(st.start), 'count', st.count + 1)
    redis.call('PEXPIRE', kflood, ARGV[7])
  end
  if st.sday ~= nil then
    if st.fresh then redis.call('HSET', kspend, 'day', ARGV[10], 'micros', ARGV[9])
    else redis.call('HINCRBY', kspend, 'micros', ARGV[9]) end
    redis.call('PEXPIRE', kspend, ARGV[11])
  end
  if st.fraud ~= nil then fraud_write(ARGV[12], ARGV[13], ARGV[14], st.fraud, st.fwindow, st.now) end
end
