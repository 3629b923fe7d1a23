-- Shared by the scripts below: `ver(k)`, the version of a stored "<version>|<JSON>" value (0 when
-- absent); `holds(k, want)`, whether k still holds exactly `want` (true when `want` is '' or not
-- given: the caller read k just now, so its version is what is compared); and `put(k, v, json,
-- keep)`, its write as version v + 1 ('' deletes; keep '-1' keeps the key's TTL, else PX keep).
local function holds(k, want)
  return want == nil or want == '' or redis.call('GET', k) == want
end
local function ver(k)
  local cur = redis.call('GET', k)
  if cur then return tonumber(string.match(cur, '^(%d+)|')) or 0 end
  return 0
end
local function put(k, v, json, keep)
  if json == '' then redis.call('DEL', k)
  elseif keep == '-1' then redis.call('SET', k, (v + 1) .. '|' .. json, 'KEEPTTL')
  else redis.call('SET', k, (v + 1) .. '|' .. json, 'PX', keep) end
end
